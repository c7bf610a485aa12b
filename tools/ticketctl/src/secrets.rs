//! The secrets of a deployment, made once and kept: the pass key pair, the
//! development member-token issuer (and the JWKS every service trusts), the
//! admin key, and, for a container deployment, database and Grafana
//! passwords. `up` keeps them in its data folder; `ticketctl secrets DIR`
//! (the compose init step) also hands each consumer only its own share, in
//! DIR/<consumer>/, for the `*_FILE` settings.

use anyhow::{bail, Context};
use shared_events::Service;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use ticket_runtime::dev::issuer::DevIssuer;

/// What a data folder holds, made on its first use and kept there.
pub struct LocalSecrets {
    /// (private, public), base64.
    pub pass_keys: (String, String),
    pub issuer: DevIssuer,
    pub jwks_path: PathBuf,
    pub admin_key: String,
    pub admin_key_is_new: bool,
}

/// Makes the folder's secrets that are missing and reads the others.
pub fn local_secrets(data_dir: &Path) -> anyhow::Result<LocalSecrets> {
    let pass_keys = pass_keys(data_dir)?;
    let issuer = dev_issuer(data_dir)?;
    let jwks_path = data_dir.join("member-jwks.json");
    std::fs::write(&jwks_path, issuer.jwks().to_string())
        .with_context(|| format!("cannot write {}", jwks_path.display()))?;
    let admin_path = data_dir.join("admin-key");
    let (admin_key, admin_key_is_new) = match std::fs::read_to_string(&admin_path) {
        Ok(key) if key.trim().len() >= ticket_runtime::http::admin::MIN_ADMIN_KEY_LEN => {
            (key.trim().to_string(), false)
        }
        _ => {
            let key = random_hex(16)?;
            write_private(&admin_path, &key)?;
            (key, true)
        }
    };
    Ok(LocalSecrets {
        pass_keys,
        issuer,
        jwks_path,
        admin_key,
        admin_key_is_new,
    })
}

/// The development member-token issuer of a data folder.
pub fn dev_issuer(data_dir: &Path) -> anyhow::Result<DevIssuer> {
    let path = data_dir.join("member-issuer.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return DevIssuer::from_base64(&text).with_context(|| {
            format!(
                "{} is not an issuer key; delete it to make a new one",
                path.display()
            )
        });
    }
    let issuer = DevIssuer::generate()?;
    write_private(&path, &issuer.private_key_base64())?;
    Ok(issuer)
}

/// The pass key pair, made once and kept in the data folder.
fn pass_keys(data_dir: &Path) -> anyhow::Result<(String, String)> {
    let path = data_dir.join("pass-keys.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let keys: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if let (Some(private), Some(public)) = (keys["private"].as_str(), keys["public"].as_str()) {
            return Ok((private.to_string(), public.to_string()));
        }
        bail!(
            "{} is missing its keys; delete it to make new ones",
            path.display()
        );
    }
    let (private, public) = ticket_runtime::dev::keys::generate_key_pair();
    let body = serde_json::json!({ "private": private, "public": public }).to_string();
    write_private(&path, &body)?;
    Ok((private, public))
}

pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random secret kept in `path`: read when present, else made.
fn kept_random(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => {
            let secret = random_hex(24)?;
            write_private(path, &secret)?;
            Ok(secret)
        }
    }
}

/// Writes a secret readable by its owner only, from its first byte.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A file made before with other permissions keeps them on open.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Make a deployment's secrets once (an init step's job; run again, it
/// keeps what exists) and give each consumer its share in DIR/<consumer>/:
/// every service its database URL, the pass public key and the member
/// JWKS; concert the admin key; queue the pass signing key; postgres the
/// passwords of the five login roles; grafana its admin password; the
/// console the admin key. DIR
/// itself is a data folder as `up` makes one, so `ticketctl login
/// --data-dir DIR` signs member tokens.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsOptions {
    /// The folder that keeps every secret (the shares go in subfolders).
    pub dir: PathBuf,
    /// The PostgreSQL server in the services' database URLs.
    #[arg(long, default_value = "postgres:5432")]
    pub database_host: String,
    /// Who owns the services' shares (the image's user).
    #[arg(long, default_value_t = 10001)]
    pub service_uid: u32,
    /// Who owns postgres' share (the postgres user of its image).
    #[arg(long, default_value_t = 999)]
    pub postgres_uid: u32,
    /// Who owns grafana's share (the grafana user of its image).
    #[arg(long, default_value_t = 472)]
    pub grafana_uid: u32,
}

/// The login role, and database, of a service: `ticketing_member_balance`.
pub fn database_name(service: Service) -> String {
    format!("ticketing_{}", service.as_str().replace('-', "_"))
}

pub fn run(options: SecretsOptions) -> anyhow::Result<()> {
    let dir = &options.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let secrets = local_secrets(dir)?;
    let jwks = secrets.issuer.jwks().to_string();
    let shares = dir.join("postgres");
    std::fs::create_dir_all(&shares)?;
    let mut postgres_share = vec![(
        "postgres-password".to_string(),
        kept_random(&dir.join("postgres-password"))?,
    )];
    for service in Service::ALL {
        let role = database_name(service);
        let password = kept_random(&dir.join(format!("{role}.password")))?;
        postgres_share.push((format!("{role}.password"), password.clone()));
        let mut share = vec![
            (
                "database-url",
                format!(
                    "postgres://{role}:{password}@{}/{role}",
                    options.database_host
                ),
            ),
            ("pass-public-key", secrets.pass_keys.1.clone()),
            ("member-jwks.json", jwks.clone()),
            ("admin-key", secrets.admin_key.clone()),
        ];
        if service == Service::Queue {
            share.push(("pass-signing-key", secrets.pass_keys.0.clone()));
        }
        let files: Vec<(String, String)> = share
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        hand_over(&dir.join(service.as_str()), &files, options.service_uid)?;
    }
    hand_over(&shares, &postgres_share, options.postgres_uid)?;
    // The saga console signs its operators in with the admin key.
    let console = vec![("admin-key".to_string(), secrets.admin_key.clone())];
    hand_over(&dir.join("console"), &console, options.service_uid)?;
    let grafana = vec![(
        "admin-password".to_string(),
        kept_random(&dir.join("grafana-admin-password"))?,
    )];
    hand_over(&dir.join("grafana"), &grafana, options.grafana_uid)?;
    println!(
        "secrets {} in {} (admin key: {}/admin-key)",
        if secrets.admin_key_is_new {
            "made"
        } else {
            "kept"
        },
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Writes one consumer's files, readable by its user only.
fn hand_over(folder: &Path, files: &[(String, String)], uid: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    for (name, value) in files {
        let path = folder.join(name);
        write_private(&path, value)?;
        chown(&path, uid)?;
    }
    // The folder is usually a volume's root, mounted read-only in the
    // consumer's container: it must be able to list it.
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
    chown(folder, uid)
}

fn chown(path: &Path, uid: u32) -> anyhow::Result<()> {
    // Only root may give files away; anyone else (a test, a developer
    // trying it) keeps them as their own.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .with_context(|| format!("cannot give {} to uid {uid}", path.display()))
}
