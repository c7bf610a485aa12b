//! The console's JSON API: each answer comes from the same functions the
//! command-line tools use (`saga`, `dlq`, `status`, `audit`), run on the
//! blocking pool because they read Kafka synchronously.

use actix_web::{web, HttpResponse};
use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use ticket_runtime::http::ApiError;
use uuid::Uuid;

use super::live::{self, Filter, Live};
use super::Console;
use crate::inspect::{audit, dlq, saga, status, Reader};

/// The cluster did not answer (broker or services down).
fn unreachable(error: anyhow::Error) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::BAD_GATEWAY,
        "cluster_unreachable",
        format!("{error:#}"),
    )
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(work)
        .await
        .map_err(|error| unreachable(error.into()))?
        .map_err(unreachable)
}

pub async fn events(console: web::Data<Console>, filter: web::Query<Filter>) -> HttpResponse {
    let flow: &Arc<Live> = &console.live;
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Tells nginx (the compose gateway) not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(live::stream(flow, filter.into_inner()))
}

pub async fn saga(
    console: web::Data<Console>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let options = console.options.clone();
    let found = blocking(move || {
        let started = std::time::Instant::now();
        let reader = Reader::connect(&options.cluster.kafka)?;
        let found = saga::find(&reader, id, options.slack, options.stuck_after)?;
        Ok(found.map(|saga| {
            let mut body = saga::to_json(&saga, started.elapsed());
            body["trace_url"] = json!(trace_url(&options.trace_url, &saga));
            body
        }))
    })
    .await?;
    match found {
        Some(body) => Ok(HttpResponse::Ok().json(body)),
        None => Err(ApiError::not_found(
            "saga_not_found",
            format!("no saga event names {id} as its reservation or payment"),
        )),
    }
}

/// The link to the saga's trace, from the first traceparent its events
/// carry, where a tracing UI is configured.
fn trace_url(template: &Option<String>, saga: &saga::Saga) -> Option<String> {
    let template = template.as_ref()?;
    let trace_id = saga.records.iter().find_map(|r| {
        let parent = r.header(ticket_runtime::messaging::kafka::headers::TRACEPARENT)?;
        parent.split('-').nth(1).map(str::to_string)
    })?;
    Some(template.replace("{trace_id}", &trace_id))
}

#[derive(Deserialize)]
pub struct FanQuery {
    fan: Uuid,
}

pub async fn sagas_of_fan(
    console: web::Data<Console>,
    query: web::Query<FanQuery>,
) -> Result<HttpResponse, ApiError> {
    let fan = query.fan;
    let options = console.options.clone();
    let sagas = blocking(move || {
        let reader = Reader::connect(&options.cluster.kafka)?;
        saga::of_fan(
            &reader,
            fan,
            Utc::now() - options.window,
            options.stuck_after,
        )
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "sagas": sagas })))
}

#[derive(Deserialize)]
pub struct StuckQuery {
    older_than_secs: Option<u32>,
}

pub async fn stuck(
    console: web::Data<Console>,
    query: web::Query<StuckQuery>,
) -> Result<HttpResponse, ApiError> {
    let older_than = TimeDelta::seconds(i64::from(query.older_than_secs.unwrap_or(60)));
    let options = console.options.clone();
    let sagas = blocking(move || {
        let reader = Reader::connect(&options.cluster.kafka)?;
        saga::stalled(
            &reader,
            Utc::now() - options.window,
            older_than,
            options.stuck_after,
        )
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "sagas": sagas })))
}

fn everything(console: &Console) -> dlq::Selection {
    dlq::Selection {
        kafka: console.options.cluster.kafka.clone(),
        topic: None,
        consumer: None,
    }
}

pub async fn dead_letters(console: web::Data<Console>) -> Result<HttpResponse, ApiError> {
    let select = everything(&console);
    let letters = blocking(move || {
        let reader = Reader::connect(&select.kafka)?;
        Ok(dlq::letters(&reader, &select)?
            .iter()
            .map(dlq::Letter::to_json)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "letters": letters })))
}

#[derive(Deserialize)]
pub struct Redrive {
    letters: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn redrive(
    console: web::Data<Console>,
    body: web::Json<Redrive>,
) -> Result<HttpResponse, ApiError> {
    let Redrive { letters, dry_run } = body.into_inner();
    if letters.is_empty() {
        return Err(ApiError::bad_request(
            "no_letters",
            "name at least one letter to redrive",
        ));
    }
    let select = everything(&console);
    let replays = web::block(move || dlq::replay(&select, Some(letters.as_slice()), dry_run))
        .await
        .map_err(|error| unreachable(error.into()))?
        .map_err(|error| match error.downcast_ref::<dlq::UnknownLetter>() {
            Some(unknown) => ApiError::not_found("letter_not_found", unknown.to_string()),
            None => unreachable(error),
        })?;
    if !dry_run {
        for replay in &replays {
            eprintln!("console: {}: {}", replay.outcome.as_str(), replay.detail);
        }
    }
    let outcomes: Vec<_> = replays
        .iter()
        .map(|r| json!({ "id": r.id, "outcome": r.outcome.as_str(), "detail": r.detail }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "outcomes": outcomes })))
}

pub async fn health(console: web::Data<Console>) -> Result<HttpResponse, ApiError> {
    let options = console.options.clone();
    let services = blocking(move || {
        let reader = Reader::connect(&options.cluster.kafka)?;
        status::collect(
            &reader,
            &options.cluster.kafka,
            &options.cluster.urls,
            status::Limits {
                max_lag: 1000,
                max_outbox_age: TimeDelta::seconds(60),
            },
        )
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "services": services,
        "sign_in_failures": console.sessions.failed_total(),
    })))
}

pub async fn run_audit(console: web::Data<Console>) -> Result<HttpResponse, ApiError> {
    let options = audit::AuditOptions {
        cluster: console.options.cluster.clone(),
        settle_timeout: console.options.audit_settle,
        json: true,
    };
    let report = blocking(move || audit::audit(&options)).await?;
    Ok(HttpResponse::Ok().json(report))
}
