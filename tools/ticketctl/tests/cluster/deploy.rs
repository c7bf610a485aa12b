//! The Docker deployment cannot run here (no engine), so this checks what
//! can be checked without one: every service is in docker-compose.yml with
//! its own database and the broker, its environment is valid configuration
//! for that service, and the image runs `ticketctl`.

use crate::support::defaults;
use shared_events::Service;
use std::path::PathBuf;
use ticket_runtime::config::Layers;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compose() -> serde_json::Value {
    let path = repo().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Compose's `<<: *service` merge keys, resolved as Compose does.
    yaml.apply_merge().unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// Builds the service's settings from its defaults plus the compose
/// environment, with `${VAR:?...}` placeholders replaced by sample values.
fn check_settings(service: Service, env: Vec<(String, String)>) -> u16 {
    let layers = Layers::new(defaults(service)).unwrap().env(env);
    let text = format!("{service}");
    match service {
        Service::Concert => layers
            .build::<concert_service::ConcertSettings>()
            .map(|s| s.http.port),
        Service::Queue => layers
            .build::<queue_service::QueueSettings>()
            .map(|s| s.http.port),
        Service::Reservation => layers
            .build::<reservation_service::ReservationSettings>()
            .map(|s| s.http.port),
        Service::MemberBalance => layers
            .build::<member_balance_service::BalanceSettings>()
            .map(|s| s.http.port),
        Service::Payment => layers
            .build::<payment_service::PaymentSettings>()
            .map(|s| s.http.port),
    }
    .unwrap_or_else(|e| panic!("{text}: compose environment is not valid configuration: {e}"))
}

#[test]
fn every_service_is_deployed_with_its_own_database_and_valid_settings() {
    let compose = compose();
    let init_sql = std::fs::read_to_string(repo().join("deploy/postgres-init.sql")).unwrap();
    let (private, public) = ticket_runtime::pass::generate_key_pair();
    for service in Service::ALL {
        let name = service.as_str();
        let spec = &compose["services"][name];
        assert!(spec.is_object(), "{name} missing from docker-compose.yml");
        assert_eq!(spec["command"], serde_json::json!(["serve", name]));
        assert_eq!(spec["depends_on"]["kafka"]["condition"], "service_healthy");
        assert_eq!(
            spec["depends_on"]["postgres"]["condition"],
            "service_healthy"
        );
        let env = spec["environment"].as_object().unwrap();
        let database = env["DATABASE_URL"].as_str().unwrap();
        let db_name = database.rsplit('/').next().unwrap();
        assert_eq!(db_name, format!("ticketing_{}", name.replace('-', "_")));
        assert!(
            init_sql.contains(&format!("CREATE DATABASE {db_name};")),
            "{db_name} not created"
        );
        assert_eq!(env["KAFKA_BROKERS"], "kafka:9092");

        let resolved: Vec<(String, String)> = env
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    serde_json::Value::String(s) if s.contains("PASS_SIGNING_KEY") => {
                        private.clone()
                    }
                    serde_json::Value::String(s) if s.contains("PASS_PUBLIC_KEY") => public.clone(),
                    serde_json::Value::String(s) if s.starts_with("${") => "sample".into(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), value)
            })
            .collect();
        let port = check_settings(service, resolved);
        let published = format!("127.0.0.1:{port}:{port}");
        assert_eq!(spec["ports"], serde_json::json!([published]), "{name} port");
        let check = spec["healthcheck"]["test"].to_string();
        assert!(
            check.contains(&format!("{port}/health/ready")),
            "{name} healthcheck: {check}"
        );
    }
}

#[test]
fn the_image_builds_and_runs_ticketctl() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked -p ticketctl"));
    assert!(dockerfile.contains("ENTRYPOINT [\"ticketctl\"]"));
    let compose = compose();
    for service in Service::ALL {
        assert_eq!(
            compose["services"][service.as_str()]["build"]["dockerfile"],
            "deploy/Dockerfile"
        );
    }
}
