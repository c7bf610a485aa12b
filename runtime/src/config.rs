//! Layered configuration: built-in defaults, the service's defaults, an
//! optional TOML file (`APP_CONFIG_FILE`), then the environment (highest):
//! `APP__SECTION__KEY` variables, and `KAFKA_BROKERS`, `DATABASE_URL` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` as the conventional shortcuts for their
//! settings (an `APP__` variable for the same setting wins). Any of these
//! may instead name a file holding the value, with `_FILE` appended
//! (`DATABASE_URL_FILE`, `APP__ADMIN__KEY_FILE`): how containers
//! receive secrets without putting them in the environment. Merging and
//! typing are `figment`'s; every layer is named, so an error says which
//! file or variable holds the bad value.

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Defaults shared by every service; each service adds its own section.
const COMMON_DEFAULTS: &str = r#"
[http]
host = "127.0.0.1"
port = 0
body_limit_bytes = 65536
client_request_timeout_ms = 5000
client_body_timeout_ms = 10000

[database]
url = "sqlite://data/service.db"
pool_size = 8
connect_timeout_ms = 5000

[kafka]
brokers = "127.0.0.1:9092"
topic_prefix = ""
partitions = 3
replication_factor = 1
enable_idempotence = true
fetch_wait_max_ms = 500
message_timeout_ms = 10000
linger_ms = 1

[outbox]
batch_size = 256
sweep_interval_ms = 1000
retention_secs = 3600
lease_ttl_ms = 15000

[consumer]
batch_size = 64
max_attempts = 8
backoff_initial_ms = 50
backoff_max_ms = 5000
stats_interval_ms = 5000
commit_interval_ms = 1000

[telemetry]
log_filter = "info"
log_format = "text"

# `X-Admin-Key` of the admin endpoints: `key` (at least 16 characters) has
# no default and must be set (APP__ADMIN__KEY or APP__ADMIN__KEY_FILE).
[admin]

# For the services that act for fans (all but concert).
[member_auth]
# The identity provider whose member tokens (Authorization: Bearer) say who
# the fan is: EdDSA or RS256 JWTs, verified against its JWKS (a file or an
# https URL). `ticketctl up` points this at its development issuer.
issuer = "ticketctl-dev"
audience = "ticketing"
jwks = ""
# Clock skew tolerated on exp/nbf, and how often the JWKS is fetched again.
leeway_secs = 30
jwks_refresh_secs = 300
# Keys not fetched again for this long are no longer trusted (every member
# token is then refused with member_token_keys_stale until a fetch succeeds).
jwks_max_age_secs = 3600
# A token naming an unknown key id fetches the JWKS at once, but no more
# often than this.
jwks_refetch_min_secs = 30
# Tokens that verified are remembered (until their exp, while the keys that
# verified them are current), up to this many: a fan's repeated requests
# are not verified again. 0 verifies every request.
verified_cache_entries = 10000
"#;

/// A value that must never appear in logs or debug output.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub body_limit_bytes: usize,
    /// How long a new connection has to send its first request's head: a
    /// slow or silent client is answered 408 (or just disconnected) after
    /// this. actix-web bounds only the first request of a connection.
    pub client_request_timeout_ms: u64,
    /// How long a request's body may take to arrive once its head has: a
    /// body still trickling in after this is answered 408.
    pub client_body_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (or a bare path) or `postgres://...`; may hold a password.
    pub url: Secret,
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Prepended to every topic name, so environments can share a cluster.
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics this service creates: with the
    /// producer's `acks=all`, how many replicas must have an event before
    /// the broker acknowledges it. Unset, the broker's own default applies
    /// (1 on a single broker); a replicated cluster sets it so that losing
    /// one broker loses no acknowledged event.
    #[serde(default)]
    pub min_insync_replicas: Option<i32>,
    pub enable_idempotence: bool,
    /// How long a consumer's fetch may wait at the broker for data: the
    /// latency of each hop when the broker answers fetches only at the end
    /// of the wait, and the idle fetch rate otherwise.
    pub fetch_wait_max_ms: u32,
    /// How long the producer tries to deliver one event before it reports
    /// the event as failed (the relay then publishes it again later).
    pub message_timeout_ms: u64,
    /// How long the producer holds an event for others bound for the same
    /// partition, to send them in one produce request (librdkafka's
    /// `linger.ms`): each hop's latency grows by up to this, the broker's
    /// work per event shrinks with the requests.
    pub linger_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSettings {
    pub batch_size: i64,
    /// How often leftovers are swept when no commit woke the relay.
    pub sweep_interval_ms: u64,
    /// How long sent rows are kept for inspection before they are pruned.
    pub retention_secs: i64,
    /// How long the relay lease lasts without renewal: a dead relay's lease
    /// is taken over after this. A live relay renews it every third of it,
    /// also while a slow publish is in flight.
    pub lease_ttl_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerSettings {
    /// Most events applied in one local transaction: those that have
    /// arrived when the consumer is ready for more, never waiting for more.
    /// 1 applies each event in a transaction of its own.
    pub batch_size: usize,
    /// Attempts at one event before it goes to the dead-letter topic.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How often librdkafka reports the consumer's lag (`kafka_consumer_lag`).
    pub stats_interval_ms: u64,
    /// How often the offsets stored after local commits are committed to the
    /// group. A crash replays at most this much, which the idempotent
    /// consumer absorbs; committing per event instead starves the group's
    /// heartbeats under load (the coordinator serves a connection's requests
    /// one at a time) and costs the broker a group write per event.
    pub commit_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; export is off when absent.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

/// The `[admin]` section every service has.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// Required, no default: a deployment that forgets it does not start
    /// with an open admin API.
    #[serde(default)]
    pub key: Option<Secret>,
}

/// Settings every service has, plus the service's own sections `T`.
#[derive(Debug, Clone)]
pub struct Settings<T> {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub outbox: OutboxSettings,
    pub consumer: ConsumerSettings,
    pub telemetry: TelemetrySettings,
    pub admin: AdminSettings,
    pub service: T,
}

#[derive(Deserialize)]
struct CommonSettings {
    http: HttpSettings,
    database: DatabaseSettings,
    kafka: KafkaSettings,
    outbox: OutboxSettings,
    consumer: ConsumerSettings,
    telemetry: TelemetrySettings,
    admin: AdminSettings,
}

/// The service section of a service that has no settings of its own.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoServiceSettings {}

// The cause is part of each message (logs print only the message), so it
// is not also a `source`: error reports would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("invalid TOML in {origin}: {cause}")]
    Parse {
        origin: String,
        cause: Box<figment::Error>,
    },
    #[error("cannot read {path} named by {variable}: {cause}")]
    ReadSecretFile {
        variable: String,
        path: String,
        cause: std::io::Error,
    },
    #[error("{variable} and {variable}_FILE are both set; set one")]
    ValueAndFile { variable: String },
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
}

/// One layer of settings under the name an error quotes.
struct Layer {
    name: String,
    data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

impl Layer {
    fn toml(name: impl Into<String>, text: &str) -> Result<Layer, ConfigError> {
        let name = name.into();
        let data = Toml::string(text)
            .data()
            .map_err(|cause| ConfigError::Parse {
                origin: name.clone(),
                cause: Box::new(cause),
            })?
            .remove(&Profile::Default)
            .unwrap_or_default();
        Ok(Layer { name, data })
    }

    /// `dotted` (`kafka.brokers`) set to `value`.
    fn value(name: impl Into<String>, dotted: &str, value: Value) -> Layer {
        Layer {
            name: name.into(),
            data: figment::util::nest(dotted, value)
                .into_dict()
                .unwrap_or_default(),
        }
    }
}

/// The dotted setting a variable names, and whether it is one of the
/// conventional shortcuts (which explicit `APP__` variables outrank).
fn setting_of(variable: &str) -> Option<(String, bool)> {
    let shortcut = match variable {
        "KAFKA_BROKERS" => Some("kafka.brokers"),
        "DATABASE_URL" => Some("database.url"),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("telemetry.otlp_endpoint"),
        _ => None,
    };
    if let Some(dotted) = shortcut {
        return Some((dotted.to_string(), true));
    }
    let path = variable.strip_prefix("APP__")?;
    let dotted = path.split("__").collect::<Vec<_>>().join(".");
    Some((dotted.to_ascii_lowercase(), false))
}

/// A variable's text, as a number or a boolean when the setting's default
/// is one. `build` alone cannot always do this: a section read through
/// `#[serde(flatten)]` reaches serde as untyped data, where "1000" stays
/// text and a number setting refuses it. Text, and settings without a
/// default, stay as written (a secret made of digits stays text).
fn typed_like(default: Option<Value>, raw: String) -> Value {
    match default {
        Some(Value::Num(..)) => {
            if let Ok(n) = raw.trim().parse::<i64>() {
                return Value::from(n);
            }
            if let Ok(x) = raw.trim().parse::<f64>() {
                return Value::from(x);
            }
        }
        Some(Value::Bool(..)) => {
            if let Ok(b) = raw.trim().parse::<bool>() {
                return Value::from(b);
            }
        }
        _ => {}
    }
    Value::from(raw)
}

/// Builds settings from layers; [`Settings::load`] is the usual entry point.
pub struct Layers {
    figment: Figment,
}

impl Layers {
    pub fn new(service_defaults: &str) -> Result<Layers, ConfigError> {
        let figment = Figment::new()
            .merge(Layer::toml("built-in defaults", COMMON_DEFAULTS)?)
            .merge(Layer::toml("service defaults", service_defaults)?);
        Ok(Layers { figment })
    }

    pub fn file(self, path: &Path) -> Result<Layers, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        let layer = Layer::toml(format!("config file {}", path.display()), &text)?;
        Ok(Layers {
            figment: self.figment.merge(layer),
        })
    }

    /// Applies `APP__SECTION__KEY=value` pairs and the conventional
    /// shortcuts, from the given variables (the process's, or a test's);
    /// `NAME_FILE=path` sets `NAME` to the file's contents (without the
    /// trailing newline an editor or `echo` leaves).
    /// Values are kept as written; `build` reads one as a number or a
    /// boolean only where the setting is one, so a secret or an audience
    /// made of digits stays the text it is.
    pub fn env(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layers, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut shortcuts = Vec::new();
        let mut explicit = Vec::new();
        for (name, raw) in &vars {
            let (variable, raw) = match name.strip_suffix("_FILE") {
                Some(variable) if setting_of(variable).is_some() => {
                    if vars.iter().any(|(other, _)| other == variable) {
                        return Err(ConfigError::ValueAndFile {
                            variable: variable.to_string(),
                        });
                    }
                    let text = std::fs::read_to_string(raw).map_err(|cause| {
                        ConfigError::ReadSecretFile {
                            variable: name.clone(),
                            path: raw.clone(),
                            cause,
                        }
                    })?;
                    (variable, text.trim_end_matches(['\n', '\r']).to_string())
                }
                _ => (name.as_str(), raw.clone()),
            };
            let Some((dotted, is_shortcut)) = setting_of(variable) else {
                continue;
            };
            let value = typed_like(self.figment.find_value(&dotted).ok(), raw);
            let layer = Layer::value(format!("environment variable {name}"), &dotted, value);
            if is_shortcut {
                shortcuts.push(layer);
            } else {
                explicit.push(layer);
            }
        }
        // Explicit APP__ variables win over the shortcuts.
        let figment = shortcuts
            .into_iter()
            .chain(explicit)
            .fold(self.figment, Figment::merge);
        Ok(Layers { figment })
    }

    /// Sets one value, as a caller that owns the process (like `ticketctl`) would.
    pub fn set(self, dotted: &str, value: impl Serialize) -> Layers {
        // A value that cannot be serialized is reported by `build`, as
        // figment reports a provider's error, never replaced.
        Layers {
            figment: self
                .figment
                .merge(figment::providers::Serialized::default(dotted, value)),
        }
    }

    /// The `[kafka]` section alone, for a tool that talks to the services'
    /// broker as they do (same client settings) without being a service.
    pub fn kafka(self) -> Result<KafkaSettings, ConfigError> {
        self.figment
            .extract_inner_lossy("kafka")
            .map_err(|error| ConfigError::Invalid(Box::new(error)))
    }

    pub fn build<T: DeserializeOwned>(self) -> Result<Settings<T>, ConfigError> {
        let invalid = |error| ConfigError::Invalid(Box::new(error));
        // Lossy: text from the environment becomes a number or a boolean
        // where (and only where) the setting asks for one.
        let common: CommonSettings = self.figment.extract_lossy().map_err(invalid)?;
        let service: T = self.figment.extract_lossy().map_err(invalid)?;
        Ok(Settings {
            http: common.http,
            database: common.database,
            kafka: common.kafka,
            outbox: common.outbox,
            consumer: common.consumer,
            telemetry: common.telemetry,
            admin: common.admin,
            service,
        })
    }
}

impl<T: DeserializeOwned> Settings<T> {
    /// Defaults, then `APP_CONFIG_FILE` if set, then the environment.
    pub fn load(service_defaults: &str) -> Result<Settings<T>, ConfigError> {
        let mut layers = Layers::new(service_defaults)?;
        if let Ok(path) = std::env::var("APP_CONFIG_FILE") {
            layers = layers.file(Path::new(&path))?;
        }
        layers.env(std::env::vars())?.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Extra {
        queue: QueueSection,
    }

    #[derive(Debug, Deserialize)]
    struct QueueSection {
        max_active: u32,
        name: String,
    }

    const SERVICE: &str = "[queue]\nmax_active = 100\nname = \"q\"\n[http]\nport = 8082\n";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let dir = std::env::temp_dir().join(format!("cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("app.toml");
        std::fs::write(&file, "[queue]\nmax_active = 5\n[kafka]\npartitions = 6\n").unwrap();

        let settings: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .file(&file)
            .unwrap()
            .env(env(&[
                ("APP__QUEUE__MAX_ACTIVE", "7"),
                ("APP__HTTP__HOST", "0.0.0.0"),
                ("APP__KAFKA__ENABLE_IDEMPOTENCE", "false"),
                ("UNRELATED", "x"),
            ]))
            .unwrap()
            .build()
            .unwrap();

        assert_eq!(settings.service.queue.max_active, 7, "env beats file");
        assert_eq!(settings.service.queue.name, "q", "service default kept");
        assert_eq!(settings.kafka.partitions, 6, "file beats default");
        assert_eq!(
            settings.http.port, 8082,
            "service default beats common default"
        );
        assert_eq!(settings.http.host, "0.0.0.0");
        assert!(!settings.kafka.enable_idempotence);
        assert_eq!(settings.outbox.batch_size, 256, "common default kept");
    }

    #[test]
    fn min_insync_replicas_is_unset_unless_configured() {
        let default: Settings<Extra> = Layers::new(SERVICE).unwrap().build().unwrap();
        assert_eq!(default.kafka.min_insync_replicas, None);
        let replicated: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("APP__KAFKA__REPLICATION_FACTOR", "3"),
                ("APP__KAFKA__MIN_INSYNC_REPLICAS", "2"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(replicated.kafka.replication_factor, 3);
        assert_eq!(replicated.kafka.min_insync_replicas, Some(2));
        let wrong = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[("APP__KAFKA__MIN_INSYNC_REPLICAS", "two")]))
            .unwrap()
            .build::<Extra>()
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("APP__KAFKA__MIN_INSYNC_REPLICAS"), "{wrong}");
    }

    #[test]
    fn conventional_shortcuts_apply() {
        let settings: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("KAFKA_BROKERS", "10.0.0.1:9092,10.0.0.2:9092"),
                ("DATABASE_URL", "postgres://u:pw@db/x"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(settings.kafka.brokers, "10.0.0.1:9092,10.0.0.2:9092");
        assert_eq!(settings.database.url.expose(), "postgres://u:pw@db/x");
        assert_eq!(
            settings.telemetry.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let settings: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]))
            .unwrap()
            .build()
            .unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("Secret(***)"));
    }

    #[test]
    fn wrong_types_are_reported() {
        let err = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[("APP__QUEUE__MAX_ACTIVE", "lots")]))
            .unwrap()
            .build::<Extra>()
            .unwrap_err();
        assert!(err.to_string().contains("max_active"), "{err}");
    }

    #[test]
    fn an_error_names_the_layer_that_holds_the_bad_value() {
        let err = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[("APP__QUEUE__MAX_ACTIVE", "lots")]))
            .unwrap()
            .build::<Extra>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable APP__QUEUE__MAX_ACTIVE"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_variable_beats_its_shortcut() {
        let settings: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("APP__KAFKA__BROKERS", "explicit:9092"),
                ("KAFKA_BROKERS", "shortcut:9092"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(settings.kafka.brokers, "explicit:9092");
    }

    #[derive(Debug, Deserialize)]
    struct WithSecret {
        member_auth: AuthSection,
    }

    #[derive(Debug, Deserialize)]
    struct AuthSection {
        audience: String,
        key: Secret,
    }

    #[test]
    fn text_settings_keep_values_that_look_like_numbers() {
        let settings: Settings<WithSecret> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("APP__MEMBER_AUTH__AUDIENCE", "0123456789"),
                ("APP__MEMBER_AUTH__KEY", " \"true\" "),
                ("APP__KAFKA__TOPIC_PREFIX", "2024"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(settings.service.member_auth.audience, "0123456789");
        assert_eq!(settings.service.member_auth.key.expose(), " \"true\" ");
        assert_eq!(settings.kafka.topic_prefix, "2024");
    }

    #[test]
    fn env_values_are_typed_as_the_settings_need() {
        let settings: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("APP__HTTP__PORT", "8181"),
                ("APP__KAFKA__ENABLE_IDEMPOTENCE", "true"),
                ("APP__KAFKA__BROKERS", "127.0.0.1:9092"),
                ("DATABASE_URL", "sqlite://x.db"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(settings.http.port, 8181);
        assert!(settings.kafka.enable_idempotence);
        assert_eq!(settings.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(settings.database.url.expose(), "sqlite://x.db");
    }

    #[derive(Debug, Deserialize)]
    struct Flattened {
        queue: Outer,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(flatten)]
        inner: Inner,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    struct Inner {
        max_active: u32,
    }

    #[test]
    fn flattened_sections_take_numbers_from_the_environment() {
        let settings: Settings<Flattened> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("APP__QUEUE__MAX_ACTIVE", "1000"),
                ("APP__QUEUE__NAME", "42"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(settings.service.queue.inner.max_active, 1000);
        assert_eq!(settings.service.queue.name, "42");
        let wrong = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[("APP__QUEUE__MAX_ACTIVE", "many")]))
            .unwrap()
            .build::<Flattened>()
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("APP__QUEUE__MAX_ACTIVE"), "{wrong}");
    }

    #[test]
    fn a_file_variable_supplies_the_value() {
        let dir = std::env::temp_dir().join(format!("cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = dir.join("database-url");
        std::fs::write(&url, "postgres://concert:s3cret@db/concert\n").unwrap();
        let audience = dir.join("audience");
        std::fs::write(&audience, "fans").unwrap();
        let settings: Settings<WithSecret> = Layers::new(SERVICE)
            .unwrap()
            .env(vec![
                ("DATABASE_URL_FILE".to_string(), url.display().to_string()),
                (
                    "APP__MEMBER_AUTH__AUDIENCE_FILE".to_string(),
                    audience.display().to_string(),
                ),
                ("APP__MEMBER_AUTH__KEY".to_string(), "k".to_string()),
                // Not a setting's variable: left alone, never read.
                ("HOSTNAME_FILE".to_string(), "/nonexistent".to_string()),
            ])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            settings.database.url.expose(),
            "postgres://concert:s3cret@db/concert",
            "trailing newline dropped"
        );
        assert_eq!(settings.service.member_auth.audience, "fans");
    }

    #[test]
    fn a_missing_file_or_a_value_beside_its_file_is_refused() {
        let missing = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[("APP__ADMIN__KEY_FILE", "/nonexistent/admin-key")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("/nonexistent/admin-key") && missing.contains("APP__ADMIN__KEY_FILE"),
            "{missing}"
        );
        let both = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("DATABASE_URL", "sqlite://x.db"),
                ("DATABASE_URL_FILE", "/run/secrets/database-url"),
            ]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            both.contains("DATABASE_URL and DATABASE_URL_FILE"),
            "{both}"
        );
    }
}
