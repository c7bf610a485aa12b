//! The HTTP server every service runs: health and metrics endpoints, body
//! limits and timeouts, request ids and request spans.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::{InternalError, PayloadError};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{from_fn, ErrorHandlers, Next};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use futures::StreamExt;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use super::error::{json_error, method_not_allowed, not_found, path_error, query_error};
use crate::config::HttpSettings;
use crate::db::outbox;
use crate::db::{Db, DbError};
use crate::messaging::kafka::Kafka;
use crate::ops::metrics::Metrics;
use crate::ops::telemetry;

pub const REQUEST_ID: &str = "x-request-id";

/// What the shared endpoints need.
#[derive(Clone)]
pub struct Probes {
    pub service: &'static str,
    pub db: Db,
    pub kafka: Kafka,
    pub metrics: Metrics,
    /// Each consumer's name and whether it has joined its group.
    pub consumers: Vec<(String, Arc<AtomicBool>)>,
}

/// The process runs (for restarts: no dependency is checked).
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"live\", \"service\": ...}`")))]
pub(crate) async fn live(probes: web::Data<Probes>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "live", "service": probes.service }))
}

/// Ready for traffic: database, broker and every consumer are up; with
/// the version and the outbox backlog.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready: `status`, `service`, `version`, `checks`, `outbox`"),
        (status = 503, description = "Not ready; `checks` says what is down"),
    ))]
pub(crate) async fn ready(probes: web::Data<Probes>) -> HttpResponse {
    let (database, broker, backlog) = tokio::join!(
        probes.db.ping(),
        probes.kafka.is_reachable(),
        outbox_backlog(&probes.db)
    );
    let joined = probes
        .consumers
        .iter()
        .all(|(_, joined)| joined.load(Ordering::SeqCst));
    let consumers: serde_json::Map<String, serde_json::Value> = probes
        .consumers
        .iter()
        .map(|(name, joined)| {
            let state = if joined.load(Ordering::SeqCst) {
                "joined"
            } else {
                "joining"
            };
            (name.clone(), state.into())
        })
        .collect();
    let producer_failure = probes.kafka.producer_fatal_error();
    let ready = database && broker && joined && producer_failure.is_none();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "service": probes.service,
        "version": env!("CARGO_PKG_VERSION"),
        "outbox": backlog.map(|(pending, age)| serde_json::json!({
            "pending": pending,
            "oldest_age_secs": age,
        })),
        "checks": {
            "database": if database { "up" } else { "down" },
            "broker": if broker { "up" } else { "down" },
            "producer": match &producer_failure {
                None => "up".to_string(),
                Some(error) => format!("failed: {error}"),
            },
            "consumers": consumers,
        },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The outbox's backlog: how many events wait, and the oldest one's age.
async fn outbox_backlog(db: &Db) -> Option<(i64, f64)> {
    let (pending, oldest) = db
        .run(|conn| outbox::backlog(conn).map_err(DbError::from))
        .await
        .ok()?;
    let age = oldest.map_or(0.0, |at| {
        (chrono::Utc::now().naive_utc() - at)
            .as_seconds_f64()
            .max(0.0)
    });
    Some((pending, age))
}

/// Prometheus metrics (text exposition format); see docs/operations.md.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(probes: web::Data<Probes>) -> HttpResponse {
    if let Some((pending, age)) = outbox_backlog(&probes.db).await {
        probes.metrics.outbox_pending.set(pending);
        probes.metrics.outbox_oldest_age.set(age);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(probes.metrics.render())
}

/// The method as a metric label and span field: the standard methods by
/// name, anything else as `other`. A client can send any token as a method,
/// and each distinct label value would be a series kept forever.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// One span per request, parented on an incoming `traceparent`; a request
/// id taken from `X-Request-Id` (or made) and echoed on the response; the
/// request counted and timed. Every answer goes through here, also one a
/// middleware refused with an error (the admin key check).
async fn trace_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.is_ascii())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "http.request",
        http.method = method,
        http.route = %route,
        http.target = %req.path(),
        request_id = %request_id,
        http.status = tracing::field::Empty,
    );
    if let Some(traceparent) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        telemetry::continue_trace(&span, traceparent);
    }
    let metrics = req
        .app_data::<web::Data<Probes>>()
        .map(|p| p.metrics.clone());
    let started = Instant::now();
    let request_id = HeaderValue::from_str(&request_id).ok();
    let record = |status: StatusCode| {
        span.record("http.status", status.as_u16());
        if let Some(metrics) = &metrics {
            metrics
                .http_requests
                .with_label_values(&[method, route.as_str(), status.as_str()])
                .inc();
            metrics
                .http_duration
                .with_label_values(&[method, route.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
    };
    match next.call(req).instrument(span.clone()).await {
        Ok(mut response) => {
            record(response.status());
            if let Some(value) = request_id {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID), value);
            }
            Ok(response)
        }
        // The error's answer is made here rather than by the server, so it
        // is counted and tagged like any other. It still travels as an
        // error: the request went to the inner service, and a response of
        // our own needs it back (routing insists on being its only holder).
        Err(error) => {
            let mut response = error.error_response();
            record(response.status());
            if let Some(value) = request_id {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID), value);
            }
            Err(InternalError::from_response(error, response).into())
        }
    }
}

/// Gives the request body until `timeout` after its head to arrive: a
/// client trickling a body would otherwise hold its connection and its
/// handler for as long as it likes (actix-web bounds only the head, with
/// `client_request_timeout`). A late body fails to read as `TimedOut`,
/// which the JSON extractor answers 408.
async fn bound_body(
    timeout: web::Data<BodyTimeout>,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let deadline = tokio::time::Instant::now() + timeout.0;
    let body = req.take_payload();
    let bounded = futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(body))),
            Ok(None) => None,
            Err(_) => Some((
                Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                ))),
                None,
            )),
        }
    });
    req.set_payload(Payload::Stream {
        payload: Box::pin(bounded),
    });
    next.call(req).await
}

/// How long a request's body may take to arrive (`http.client_body_timeout_ms`).
struct BodyTimeout(Duration);

/// Binds the listener (port 0 picks a free port) and starts the server with
/// the shared endpoints plus the service's own routes from `configure`
/// (one `web::resource` per path, so that another method is 405).
pub fn serve<F>(
    settings: &HttpSettings,
    probes: Probes,
    configure: F,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))?;
    let addr = listener.local_addr()?;
    let body_limit = settings.body_limit_bytes;
    let body_timeout = web::Data::new(BodyTimeout(Duration::from_millis(
        settings.client_body_timeout_ms,
    )));
    let probes = web::Data::new(probes);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed))
            .wrap(from_fn(bound_body))
            .wrap(from_fn(trace_requests))
            .app_data(probes.clone())
            .app_data(body_timeout.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::new(body_limit))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .service(web::resource("/health/live").get(live))
            .service(web::resource("/health/ready").get(ready))
            .service(web::resource("/metrics").get(metrics))
            .configure(configure.clone())
            .default_service(web::to(not_found))
    })
    // Idle keep-alive connections outlive any client pool's idle timeout
    // (reqwest: 90 s), so the client always closes first: a server closing
    // at the moment a client reuses the connection fails that request
    // (hyper's IncompleteMessage; seen in the test suite).
    .keep_alive(Duration::from_secs(120))
    // A new connection has this long to send its first request's head
    // (else 408 and the connection is closed): a slow or silent client
    // cannot hold it without sending a whole request. actix-web times only
    // a connection's first head; bodies are timed by `bound_body`.
    .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
    // After the server closes a connection, how long the client has to
    // acknowledge before the socket is dropped anyway.
    .client_disconnect_timeout(Duration::from_secs(1))
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(5)
    .run();
    Ok((server, addr))
}
