//! The Docker deployment, checked without a Docker engine (CI has none; a
//! run on a real engine is recorded in docs/deployment.md): the compose
//! file against the Compose Specification, every service's environment
//! against its configuration with the files the `secrets` step really
//! makes, the PostgreSQL role script on the local server, the topic step
//! on the test broker, and the gateway, Prometheus, image and ignore files.

use crate::support::defaults;
use diesel::prelude::*;
use serde_json::{json, Value};
use shared_events::{Service, Topic};
use std::path::{Path, PathBuf};
use std::process::Command;
use ticket_runtime::config::Layers;
use ticket_runtime::dev::testkit;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose_text() -> String {
    read("docker-compose.yml")
}

/// The compose file as JSON, with `<<:` merge keys resolved as Compose does.
fn compose() -> Value {
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&compose_text()).unwrap();
    yaml.apply_merge().unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn validate(text: &str) -> Result<compose_spec::Compose, serde_yaml::Error> {
    compose_spec::Compose::options()
        .apply_merge(true)
        .from_yaml_str(text)
}

#[test]
fn the_compose_file_follows_the_compose_specification() {
    let text = compose_text();
    let parsed = validate(&text).unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    assert_eq!(
        parsed.services.len(),
        compose()["services"].as_object().unwrap().len()
    );
    // The check can fail: a misspelt key and a wrong value are refused.
    let misspelt = text.replacen("    depends_on:\n", "    depend_on:\n", 1);
    assert!(validate(&misspelt).is_err(), "depend_on accepted");
    let wrong = text.replacen("restart: unless-stopped", "restart: sometimes", 1);
    assert!(validate(&wrong).is_err(), "restart: sometimes accepted");
}

/// The built `ticketctl`.
fn ticketctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ticketctl"))
}

/// Runs a command that must succeed; its standard output.
fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `ticketctl secrets DIR`, as the compose init step runs it.
fn make_secrets(dir: &Path) -> String {
    run_ok(ticketctl().arg("secrets").arg(dir))
}

/// A compose value with `${VAR:-default}` replaced by its default; `${VAR}`
/// without one is refused (the file must work with nothing set).
fn interpolate(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match text.strip_prefix("${") {
        Some(rest) => {
            let (_, default) = rest
                .trim_end_matches('}')
                .split_once(":-")
                .unwrap_or_else(|| panic!("{text} has no default"));
            default.to_string()
        }
        None => text,
    }
}

fn check_settings(service: Service, env: Vec<(String, String)>) -> (u16, String) {
    let layers = Layers::new(defaults(service)).unwrap().env(env);
    let layers = layers.unwrap_or_else(|e| panic!("{service}: {e}"));
    let text = format!("{service}");
    match service {
        Service::Concert => layers
            .build::<concert_service::ConcertSettings>()
            .map(|s| (s.http.port, s.database.url.expose().to_string())),
        Service::Queue => layers
            .build::<queue_service::QueueSettings>()
            .map(|s| (s.http.port, s.database.url.expose().to_string())),
        Service::Reservation => layers
            .build::<reservation_service::ReservationSettings>()
            .map(|s| (s.http.port, s.database.url.expose().to_string())),
        Service::MemberBalance => layers
            .build::<member_balance_service::BalanceSettings>()
            .map(|s| (s.http.port, s.database.url.expose().to_string())),
        Service::Payment => layers
            .build::<payment_service::PaymentSettings>()
            .map(|s| (s.http.port, s.database.url.expose().to_string())),
    }
    .unwrap_or_else(|e| panic!("{text}: compose environment is not valid configuration: {e}"))
}

#[test]
fn every_service_starts_from_its_own_share_of_the_secrets() {
    let compose = compose();
    let services = &compose["services"];
    let secrets = testkit::temp_dir("compose-secrets");
    let said = make_secrets(&secrets);
    assert!(said.contains("made"), "{said}");

    // The init step mounts every share where `secrets` writes it.
    let init = services["secrets"]["volumes"].to_string();
    for service in Service::ALL {
        let name = service.as_str();
        assert!(
            init.contains(&format!("{name}-secrets:/secrets/{name}")),
            "{init}"
        );
    }

    let gateway = read("deploy/gateway/nginx.conf");
    let prometheus: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let prometheus = serde_json::to_value(prometheus).unwrap();
    for service in Service::ALL {
        let name = service.as_str();
        let spec = &services[name];
        assert!(spec.is_object(), "{name} missing from docker-compose.yml");
        assert_eq!(spec["command"], json!(["serve", name]));
        for step in ["secrets", "topics", "postgres-roles"] {
            assert_eq!(
                spec["depends_on"][step]["condition"], "service_completed_successfully",
                "{name} waits for {step}"
            );
        }
        assert!(
            spec["ports"].is_null(),
            "{name} publishes through the gateway only"
        );
        assert_eq!(
            spec["volumes"],
            json!([format!("{name}-secrets:/run/secrets/ticketing:ro")]),
            "{name} mounts its own share only"
        );

        // The environment, with every file it names taken from the share
        // `ticketctl secrets` made for this service.
        let share = secrets.join(name);
        let in_share = |path: &str| match path.strip_prefix("/run/secrets/ticketing/") {
            Some(file) => {
                let local = share.join(file);
                assert!(
                    local.exists(),
                    "{name} reads {path}, which secrets does not make"
                );
                local.display().to_string()
            }
            None => path.to_string(),
        };
        let env: Vec<(String, String)> = spec["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| (key.clone(), in_share(&interpolate(value))))
            .collect();
        assert!(
            env.iter().all(|(key, value)| !key.ends_with("_FILE")
                || value.starts_with(&share.display().to_string())),
            "{name}: every secret comes from a file in its share"
        );
        let (port, database_url) = check_settings(service, env);
        let role = format!("ticketing_{}", name.replace('-', "_"));
        assert!(
            database_url.starts_with(&format!("postgres://{role}:"))
                && database_url.ends_with(&format!("@postgres:5432/{role}")),
            "{name} logs in as its own role to its own database"
        );
        let check = spec["healthcheck"]["test"].to_string();
        assert!(
            check.contains(&format!("{port}/health/ready")),
            "{name}: {check}"
        );
        assert!(
            gateway.contains(&format!("listen {port}; set $up {name}:{port};")),
            "the gateway publishes {name} on {port}"
        );
        let job = prometheus["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["job_name"] == name)
            .unwrap_or_else(|| panic!("prometheus does not scrape {name}"));
        assert_eq!(job["dns_sd_configs"][0]["names"], json!([name]));
        assert_eq!(job["dns_sd_configs"][0]["port"], json!(port));
    }
    // The data platform is reached by name from payment and the gateway:
    // it must listen beyond its container's loopback.
    let platform = &services["data-platform"];
    let command: Vec<&str> = platform["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert!(
        command.windows(2).any(|w| w == ["--host", "0.0.0.0"]) && command.contains(&"8090"),
        "{command:?}"
    );
    assert_eq!(
        services["payment"]["environment"]["APP__DATA_PLATFORM__URL"],
        "http://data-platform:8090"
    );
    assert!(gateway.contains("listen 8090; set $up data-platform:8090;"));
    let published = services["gateway"]["ports"].to_string();
    assert!(
        published.contains("127.0.0.1:8081-8085:8081-8085"),
        "{published}"
    );

    // The console: behind the gateway on 8088, with the admin key and
    // nothing else of the deployment's secrets.
    let console = &services["console"];
    assert_eq!(
        console["command"],
        json!(["console", "--host", "0.0.0.0", "--port", "8088"])
    );
    assert_eq!(
        console["volumes"],
        json!(["console-secrets:/run/secrets/ticketing:ro"])
    );
    assert_eq!(
        console["environment"]["TICKETCTL_DATA_DIR"],
        "/run/secrets/ticketing"
    );
    assert!(init.contains("console-secrets:/secrets/console"), "{init}");
    let shared: Vec<String> = std::fs::read_dir(secrets.join("console"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(shared, ["admin-key"], "the console's share");
    assert!(share_has(&secrets, "console", "admin-key"));
    assert!(gateway.contains("listen 8088; set $up console:8088;"));
    let block = &gateway[gateway.find("listen 8088;").unwrap()..];
    let block = &block[..block.find("\n    }").unwrap()];
    for header in [
        // The console compares a form's Origin with this Host: its port too.
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For",
        "proxy_buffering off;",
    ] {
        assert!(
            block.contains(header),
            "the console's gateway block: {header}"
        );
    }
    assert!(published.contains("127.0.0.1:8088:8088"), "{published}");

    // What every service holds, and what only some do.
    let private = |service: &str, file: &str| share_has(&secrets, service, file);
    for service in Service::ALL {
        assert!(
            private(service.as_str(), "admin-key"),
            "{service}: admin listings"
        );
    }
    assert!(private("queue", "pass-signing-key") && !private("reservation", "pass-signing-key"));
    // The role script's passwords and Grafana's.
    let roles_script = read("deploy/postgres/roles.sh");
    for service in Service::ALL {
        let file = format!("ticketing_{}.password", service.as_str().replace('-', "_"));
        assert!(roles_script.contains(&file), "roles.sh reads {file}");
        assert!(private("postgres", &file));
    }
    assert!(private("postgres", "postgres-password"));
    assert!(private("grafana", "admin-password"));
    assert_eq!(
        services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"],
        "/run/secrets/ticketing/postgres-password"
    );
    assert_eq!(
        services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"],
        "/run/secrets/grafana/admin-password"
    );

    // A second run keeps every secret: the services' keys outlive `up`.
    let before = std::fs::read_to_string(secrets.join("queue/pass-signing-key")).unwrap();
    let said = make_secrets(&secrets);
    assert!(said.contains("kept"), "{said}");
    assert_eq!(
        std::fs::read_to_string(secrets.join("queue/pass-signing-key")).unwrap(),
        before
    );
    // The secrets folder signs member tokens for `tools login`.
    let token = run_ok(
        ticketctl()
            .args([
                "login",
                "0191e2a0-7c3b-7d40-8000-000000000001",
                "--data-dir",
            ])
            .arg(&secrets),
    );
    assert_eq!(token.trim().matches('.').count(), 2, "a JWT: {token}");
}

/// Whether a share holds a file, which only its owner may read.
fn share_has(secrets: &Path, service: &str, file: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = secrets.join(service).join(file);
    match std::fs::metadata(&path) {
        Ok(meta) => {
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{}",
                path.display()
            );
            true
        }
        Err(_) => false,
    }
}

#[test]
fn kafka_keeps_its_data_and_is_reachable_from_the_host() {
    let compose = compose();
    let kafka = &compose["services"]["kafka"];
    let env = &kafka["environment"];
    let log_dirs = env["KAFKA_LOG_DIRS"].as_str().unwrap();
    assert_eq!(kafka["volumes"], json!([format!("kafka-data:{log_dirs}")]));
    assert!(env["CLUSTER_ID"].as_str().is_some_and(|id| id.len() == 22));
    let advertised = env["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();
    assert!(advertised.contains("INTERNAL://kafka:9092"), "{advertised}");
    assert!(
        advertised.contains("HOST://127.0.0.1:29092"),
        "{advertised}"
    );
    assert_eq!(kafka["ports"], json!(["127.0.0.1:29092:29092"]));
    let topics = &compose["services"]["topics"];
    assert_eq!(topics["command"], json!(["topics"]));
    let partitions: i32 = interpolate(&topics["environment"]["APP__KAFKA__PARTITIONS"])
        .parse()
        .unwrap();
    assert!(partitions >= 2, "room for scaled consumers");
}

#[test]
fn the_topics_step_creates_every_topic_with_the_partitions_asked() {
    let prefix = testkit::unique_prefix();
    let run = |partitions: &str| {
        run_ok(
            ticketctl()
                .arg("topics")
                .env("KAFKA_BROKERS", testkit::broker())
                .env("APP__KAFKA__TOPIC_PREFIX", &prefix)
                .env("APP__KAFKA__PARTITIONS", partitions),
        )
    };
    let made = run("4");
    for topic in Topic::ALL {
        let name = format!("{prefix}{}", topic.name());
        assert!(made.contains(&format!("{name}: 4 partitions\n")), "{made}");
        assert!(
            made.contains(&format!("{name}.dlq: 4 partitions\n")),
            "{made}"
        );
    }
    // Existing topics are kept, and the shortfall said.
    let again = run("6");
    assert!(
        again.contains("4 partitions (kept: fewer than asked"),
        "{again}"
    );
}

/// Runs deploy/postgres/roles.sql with psql, as the compose step does.
fn apply_roles(prefix: &str) {
    let admin = testkit::postgres_admin_url();
    let mut command = Command::new("psql");
    command
        .arg(&admin)
        .args(["--quiet", "-v", &format!("prefix={prefix}")])
        .arg("-f")
        .arg(repo().join("deploy/postgres/roles.sql"));
    for service in Service::ALL {
        let variable = service.as_str().replace('-', "_");
        command.args(["-v", &format!("{variable}=pw-{variable}")]);
    }
    // psql: PostgreSQL's client, installed with the server.
    run_ok(&mut command);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_role_reaches_its_own_database_only() {
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    // Twice: the script runs on every `up`.
    apply_roles(&prefix);
    apply_roles(&prefix);
    let admin = testkit::postgres_admin_url();
    let server = admin.rsplit_once('/').unwrap().0.replace("postgres@", "");
    let role_url = |role: &str, database: &str| {
        server.replacen("://", &format!("://{role}@"), 1) + "/" + database
    };
    let name = |service: Service| format!("{prefix}_{}", service.as_str().replace('-', "_"));
    for service in Service::ALL {
        let role = name(service);
        // Its own database: the service's real migrations run as the role.
        let settings = ticket_runtime::dev::testkit::settings::<ticket_runtime::NoServiceSettings>(
            "",
            &role_url(&role, &role),
            "unused",
        );
        if let Err(error) = ticket_runtime::Db::connect(&settings.database, schema(service)).await {
            panic!("{role} cannot run its migrations: {error}");
        }
        // Anyone else's: refused.
        let other = name(if service == Service::Payment {
            Service::Concert
        } else {
            Service::Payment
        });
        let refused = PgConnection::establish(&role_url(&role, &other))
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("permission denied")),
            "{role} → {other}: {refused:?}"
        );
    }
    let mut conn = PgConnection::establish(&admin).unwrap();
    #[derive(QueryableByName)]
    struct Role {
        #[diesel(sql_type = diesel::sql_types::Text)]
        rolname: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        rolsuper: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        has_password: bool,
    }
    let roles: Vec<Role> = diesel::sql_query(
        "SELECT rolname::text AS rolname, rolsuper, rolpassword IS NOT NULL AS has_password \
         FROM pg_authid WHERE rolname LIKE $1 ORDER BY rolname",
    )
    .bind::<diesel::sql_types::Text, _>(format!("{prefix}\\_%"))
    .load(&mut conn)
    .unwrap();
    assert_eq!(roles.len(), Service::ALL.len());
    assert!(
        roles.iter().all(|r| !r.rolsuper && r.has_password),
        "{:?}",
        roles.iter().map(|r| &r.rolname).collect::<Vec<_>>()
    );
    // Leave the developer's server as it was.
    for service in Service::ALL {
        let role = name(service);
        diesel::sql_query(format!("DROP DATABASE \"{role}\" WITH (FORCE)"))
            .execute(&mut conn)
            .unwrap();
        diesel::sql_query(format!("DROP ROLE \"{role}\""))
            .execute(&mut conn)
            .unwrap();
    }
}

fn schema(service: Service) -> ticket_runtime::Migrations {
    match service {
        Service::Concert => concert_service::SCHEMA,
        Service::Queue => queue_service::SCHEMA,
        Service::Reservation => reservation_service::SCHEMA,
        Service::MemberBalance => member_balance_service::SCHEMA,
        Service::Payment => payment_service::SCHEMA,
    }
}

#[test]
fn the_image_is_cached_unprivileged_and_keeps_secrets_out() {
    let dockerfile = read("deploy/Dockerfile");
    for needed in [
        "cargo build --release --locked -p ticketctl",
        "--mount=type=cache,target=/usr/local/cargo/registry",
        "--mount=type=cache,target=/src/target",
        "USER 10001",
        "WORKDIR /home/ticketing",
        "EXPOSE 8081 8082 8083 8084 8085 8090",
        "ENTRYPOINT [\"ticketctl\"]",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
    let compose = compose();
    assert_eq!(
        compose["services"]["secrets"]["build"]["dockerfile"],
        "deploy/Dockerfile"
    );
    let ignored = |file: &str, entry: &str| {
        read(file)
            .lines()
            .any(|line| line.trim_start_matches('/') == entry)
    };
    for entry in [".env", "target", "data"] {
        assert!(
            ignored(".dockerignore", entry),
            ".dockerignore lacks {entry}"
        );
        assert!(ignored(".gitignore", entry), ".gitignore lacks {entry}");
    }
}

/// deploy/offline/build-standins.sh builds a stand-in under every name the
/// compose file and the Dockerfile pull, but the two it says it cannot.
#[test]
fn the_offline_stand_ins_cover_every_image_pulled() {
    let path = repo().join("deploy/offline/build-standins.sh");
    run_ok(Command::new("sh").arg("-n").arg(&path));
    let script = read("deploy/offline/build-standins.sh");
    let without = "no stand-in for grafana/grafana and kafbat/kafka-ui";
    assert!(script.contains(without));
    let mut pulled: Vec<String> = compose()["services"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|spec| spec["image"].as_str())
        .filter(|image| *image != "ticketing:latest")
        .map(str::to_string)
        .collect();
    pulled.extend(
        read("deploy/Dockerfile")
            .lines()
            .filter_map(|line| line.strip_prefix("FROM "))
            .map(|from| {
                from.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }),
    );
    for image in pulled {
        let repository = image.split(':').next().unwrap_or_default();
        let built = script.contains(&format!("docker build -t {image} "))
            || script.contains(&format!("docker import - {image}\n"));
        assert!(
            built || without.contains(repository),
            "no stand-in for {image}"
        );
    }
}

#[test]
fn the_checked_in_api_documents_match_the_code() {
    for service in Service::ALL {
        let name = service.as_str();
        let generated = run_ok(ticketctl().args(["openapi", name]));
        let path = format!("docs/api/{name}.json");
        assert!(
            read(&path) == generated,
            "{path} is out of date: cargo run -p ticketctl -- openapi {name} > {path}"
        );
        let document: Value = serde_json::from_str(&generated).unwrap();
        let schemes = &document["components"]["securitySchemes"];
        for scheme in ["member_token", "queue_pass", "admin_key"] {
            assert!(schemes[scheme].is_object(), "{name}: {scheme}");
        }
        assert!(document["components"]["schemas"]["ErrorBody"].is_object());
        assert!(document["paths"]["/health/ready"].is_object(), "{name}");
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() > 3, "{name} documents its own endpoints");
        // Every error answer is documented with the error body.
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{name} {method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
    // The long polls: how long to wait, and which version the client has.
    let reservation: Value = serde_json::from_str(&read("docs/api/reservation.json")).unwrap();
    let params = reservation["paths"]["/v1/reservations/{id}"]["get"]["parameters"].to_string();
    for param in ["wait_ms", "seen_status", "If-None-Match"] {
        assert!(params.contains(param), "{param}: {params}");
    }
    assert!(reservation["paths"]["/v1/reservations/{id}"]["get"]["responses"]["304"].is_object());
}
