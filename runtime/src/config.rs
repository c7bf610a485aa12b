//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `APP__SECTION__KEY` environment variables (highest). `KAFKA_BROKERS`,
//! `DATABASE_URL` and `OTEL_EXPORTER_OTLP_ENDPOINT` are honoured as the
//! conventional shortcuts for their settings.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use toml::{Table, Value};

/// Defaults shared by every service; each service adds its own section.
const COMMON_DEFAULTS: &str = r#"
[http]
host = "127.0.0.1"
port = 0
body_limit_bytes = 65536

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
fetch_wait_max_ms = 25
message_timeout_ms = 10000

[outbox]
batch_size = 256
sweep_interval_ms = 1000
retention_secs = 3600
lease_ttl_ms = 15000

[consumer]
max_attempts = 8
backoff_initial_ms = 50
backoff_max_ms = 5000

[telemetry]
log_filter = "info"
log_format = "text"
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
    pub enable_idempotence: bool,
    /// How long a consumer's fetch may wait at the broker for data: the
    /// latency of each hop when the broker answers fetches only at the end
    /// of the wait, and the idle fetch rate otherwise.
    pub fetch_wait_max_ms: u32,
    /// How long the producer tries to deliver one event before it reports
    /// the event as failed (the relay then publishes it again later).
    pub message_timeout_ms: u64,
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
    /// Attempts at one event before it goes to the dead-letter topic.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
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

/// Settings every service has, plus the service's own sections `T`.
#[derive(Debug, Clone)]
pub struct Settings<T> {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub outbox: OutboxSettings,
    pub consumer: ConsumerSettings,
    pub telemetry: TelemetrySettings,
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
}

/// The service section of a service that has no settings of its own.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoServiceSettings {}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML in {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid configuration:\n{0}")]
    Invalid(#[source] toml::de::Error),
}

/// Builds settings from layers; [`Settings::load`] is the usual entry point.
pub struct Layers {
    table: Table,
}

impl Layers {
    pub fn new(service_defaults: &str) -> Result<Layers, ConfigError> {
        let mut table = parse("built-in defaults", COMMON_DEFAULTS)?;
        merge(&mut table, parse("service defaults", service_defaults)?);
        Ok(Layers { table })
    }

    pub fn file(mut self, path: &Path) -> Result<Layers, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        merge(&mut self.table, parse(&path.display().to_string(), &text)?);
        Ok(self)
    }

    /// Applies `APP__SECTION__KEY=value` pairs and the conventional shortcuts.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Layers {
        let mut shortcuts = Vec::new();
        for (name, raw) in vars {
            match name.as_str() {
                "KAFKA_BROKERS" => shortcuts.push((vec!["kafka", "brokers"], raw)),
                "DATABASE_URL" => shortcuts.push((vec!["database", "url"], raw)),
                "OTEL_EXPORTER_OTLP_ENDPOINT" => {
                    shortcuts.push((vec!["telemetry", "otlp_endpoint"], raw))
                }
                _ => {
                    if let Some(path) = name.strip_prefix("APP__") {
                        let keys: Vec<String> =
                            path.split("__").map(|k| k.to_ascii_lowercase()).collect();
                        set_path(&mut self.table, &keys, env_value(&raw));
                    }
                }
            }
        }
        // Explicit APP__ variables win over the shortcuts.
        for (keys, raw) in shortcuts {
            let keys: Vec<String> = keys.into_iter().map(String::from).collect();
            if !has_env_override(&keys) {
                set_path(&mut self.table, &keys, Value::String(raw));
            }
        }
        self
    }

    /// Sets one value, as a caller that owns the process (like `ticketctl`) would.
    pub fn set(mut self, dotted: &str, value: impl Into<Value>) -> Layers {
        let keys: Vec<String> = dotted.split('.').map(String::from).collect();
        set_path(&mut self.table, &keys, value.into());
        self
    }

    pub fn build<T: DeserializeOwned>(self) -> Result<Settings<T>, ConfigError> {
        // Through text, so that an error quotes the offending key and value.
        let text = self.table.to_string();
        let common: CommonSettings = toml::from_str(&text).map_err(ConfigError::Invalid)?;
        let service: T = toml::from_str(&text).map_err(ConfigError::Invalid)?;
        Ok(Settings {
            http: common.http,
            database: common.database,
            kafka: common.kafka,
            outbox: common.outbox,
            consumer: common.consumer,
            telemetry: common.telemetry,
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
        layers.env(std::env::vars()).build()
    }
}

fn has_env_override(keys: &[String]) -> bool {
    let name = format!("APP__{}", keys.join("__").to_ascii_uppercase());
    std::env::var_os(name).is_some()
}

fn parse(origin: &str, text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|source| ConfigError::Parse {
        origin: origin.to_string(),
        source,
    })
}

/// Environment values are typed the way TOML would read them (`8081` is a
/// number, `true` a boolean); anything else is a string.
fn env_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, Value::Datetime(_) | Value::Table(_)))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set_path(table: &mut Table, keys: &[String], value: Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
    current.insert(last.clone(), value);
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
    fn conventional_shortcuts_apply() {
        let settings: Settings<Extra> = Layers::new(SERVICE)
            .unwrap()
            .env(env(&[
                ("KAFKA_BROKERS", "10.0.0.1:9092,10.0.0.2:9092"),
                ("DATABASE_URL", "postgres://u:pw@db/x"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ]))
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
            .build::<Extra>()
            .unwrap_err();
        assert!(err.to_string().contains("max_active"), "{err}");
    }

    #[test]
    fn env_values_are_typed_like_toml() {
        assert_eq!(env_value("42"), Value::Integer(42));
        assert_eq!(env_value("true"), Value::Boolean(true));
        assert_eq!(
            env_value("127.0.0.1:9092"),
            Value::String("127.0.0.1:9092".into())
        );
        assert_eq!(
            env_value("sqlite://x.db"),
            Value::String("sqlite://x.db".into())
        );
    }
}
