//! A stand-in for the data platform. `POST /v1/reservations` records a
//! completed reservation (the contract's [`CompletedReservation`]; another
//! body is 400 `invalid_record`) once per `payment_id` (201 the first time,
//! 200 for a repeat); `GET /v1/reservations` lists what was received. Records are
//! appended to a JSON-lines file when one is given, and read back at start.

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;
use shared_events::CompletedReservation;
use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

#[derive(Default)]
pub struct Received {
    records: Vec<CompletedReservation>,
    payments: HashSet<Uuid>,
    deliveries: usize,
    /// Requests still to refuse with 503, to rehearse an outage.
    outage: usize,
}

#[derive(Clone, Default)]
pub struct DataPlatform {
    received: Arc<Mutex<Received>>,
    file: Option<PathBuf>,
}

impl DataPlatform {
    pub fn new(file: Option<PathBuf>) -> DataPlatform {
        let platform = DataPlatform {
            received: Arc::default(),
            file,
        };
        if let Some(path) = &platform.file {
            if let Ok(text) = std::fs::read_to_string(path) {
                let mut received = platform
                    .received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for record in text
                    .lines()
                    .filter_map(|line| serde_json::from_str::<CompletedReservation>(line).ok())
                {
                    received.payments.insert(record.payment_id);
                    received.records.push(record);
                }
            }
        }
        platform
    }

    /// Distinct reservations received.
    pub fn records(&self) -> Vec<CompletedReservation> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .clone()
    }

    /// Refuses the next `requests` deliveries with 503 Service Unavailable.
    pub fn fail_next(&self, requests: usize) {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .outage = requests;
    }

    /// Every POST, repeats and refused ones included.
    pub fn deliveries(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deliveries
    }

    fn record(&self, body: Value) -> Result<Recorded, String> {
        let record: CompletedReservation =
            serde_json::from_value(body).map_err(|e| e.to_string())?;
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        received.deliveries += 1;
        if received.outage > 0 {
            received.outage -= 1;
            return Ok(Recorded::Unavailable);
        }
        if !received.payments.insert(record.payment_id) {
            return Ok(Recorded::Duplicate);
        }
        if let Some(path) = &self.file {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| e.to_string())?;
            let line = serde_json::to_string(&record).map_err(|e| e.to_string())?;
            writeln!(file, "{line}").map_err(|e| e.to_string())?;
        }
        received.records.push(record);
        Ok(Recorded::New)
    }

    /// Serves on `host`:`port` (0 picks one) until the returned server stops.
    pub fn serve(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
        let listener = TcpListener::bind((host, port))?;
        let addr = listener.local_addr()?;
        let platform = web::Data::new(self.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(platform.clone())
                .route("/v1/reservations", web::post().to(receive))
                .route("/v1/reservations", web::get().to(list))
                .route("/health/live", web::get().to(healthy))
                .route("/health/ready", web::get().to(healthy))
        })
        .listen(listener)?
        .workers(1)
        .disable_signals()
        .run();
        Ok((server, addr))
    }
}

enum Recorded {
    New,
    Duplicate,
    Unavailable,
}

async fn receive(platform: web::Data<DataPlatform>, body: web::Json<Value>) -> HttpResponse {
    match platform.record(body.into_inner()) {
        Ok(Recorded::New) => HttpResponse::Created().json(serde_json::json!({ "recorded": true })),
        Ok(Recorded::Duplicate) => {
            HttpResponse::Ok().json(serde_json::json!({ "recorded": false, "duplicate": true }))
        }
        Ok(Recorded::Unavailable) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "code": "unavailable", "message": "rehearsing an outage" })),
        Err(message) => HttpResponse::BadRequest()
            .json(serde_json::json!({ "code": "invalid_record", "message": message })),
    }
}

async fn list(platform: web::Data<DataPlatform>) -> HttpResponse {
    HttpResponse::Ok().json(platform.records())
}

async fn healthy() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "service": "data-platform" }))
}
