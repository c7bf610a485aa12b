//! HTTP: thin handlers that validate input into domain types and call the store.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, ResponseError};
use diesel::result::Error as DieselError;
use ticket_runtime::{ApiError, Db, DbError, Secret};
use uuid::Uuid;

use crate::domain::{ConcertRequest, InvalidConcert, NewConcert};
use crate::store;

pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub admin_key: Secret,
}

pub fn routes(cfg: &mut web::ServiceConfig, state: AppState) {
    cfg.app_data(web::Data::new(state))
        .route("/v1/concerts", web::get().to(list_concerts))
        .route(
            "/v1/concerts/{concert_id}/schedules",
            web::get().to(list_schedules),
        )
        .route(
            "/v1/schedules/{schedule_id}/seats",
            web::get().to(list_seats),
        )
        .service(
            // The key is checked before anything the caller sent is read: an
            // unauthenticated caller learns nothing about valid bodies.
            web::scope("/v1/admin")
                .wrap(from_fn(require_admin_key))
                .route("/concerts", web::post().to(create_concert)),
        );
}

async fn require_admin_key(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let expected = request
        .app_data::<web::Data<AppState>>()
        .map(|state| state.admin_key.clone());
    let given = request
        .headers()
        .get(ADMIN_KEY_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    match expected {
        Some(expected) if same_key(given, expected.expose().as_bytes()) => next.call(request).await,
        _ => Err(ConcertError::Unauthorized.into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConcertError {
    #[error("no concert {0}")]
    ConcertNotFound(Uuid),
    #[error("no schedule {0}")]
    ScheduleNotFound(Uuid),
    #[error("missing or wrong X-Admin-Key")]
    Unauthorized,
    #[error(transparent)]
    Invalid(#[from] InvalidConcert),
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for ConcertError {
    fn is_transient(&self) -> bool {
        matches!(self, ConcertError::Unexpected(e) if e.is_transient())
    }
}

impl From<DieselError> for ConcertError {
    fn from(error: DieselError) -> ConcertError {
        ConcertError::Unexpected(DbError::Query(error))
    }
}

impl ResponseError for ConcertError {
    fn status_code(&self) -> StatusCode {
        self.api().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api().error_response()
    }
}

impl ConcertError {
    fn api(&self) -> ApiError {
        match self {
            ConcertError::ConcertNotFound(_) => {
                ApiError::not_found("concert_not_found", self.to_string())
            }
            ConcertError::ScheduleNotFound(_) => {
                ApiError::not_found("schedule_not_found", self.to_string())
            }
            ConcertError::Unauthorized => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "admin_key_invalid",
                self.to_string(),
            ),
            ConcertError::Invalid(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_concert",
                self.to_string(),
            ),
            ConcertError::Unexpected(e) => ApiError::unexpected(e),
        }
    }
}

async fn list_concerts(state: web::Data<AppState>) -> Result<HttpResponse, ConcertError> {
    let concerts = state
        .db
        .run(|conn| store::list_concerts(conn).map_err(ConcertError::from))
        .await?;
    Ok(HttpResponse::Ok().json(concerts))
}

async fn list_schedules(
    state: web::Data<AppState>,
    concert_id: web::Path<Uuid>,
) -> Result<HttpResponse, ConcertError> {
    let concert_id = concert_id.into_inner();
    let schedules = state
        .db
        .run(move |conn| {
            let id = concert_id.to_string();
            if !store::concert_exists(conn, &id)? {
                return Err(ConcertError::ConcertNotFound(concert_id));
            }
            Ok(store::schedules_of(conn, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(schedules))
}

async fn list_seats(
    state: web::Data<AppState>,
    schedule_id: web::Path<Uuid>,
) -> Result<HttpResponse, ConcertError> {
    let schedule_id = schedule_id.into_inner();
    let seats = state
        .db
        .run(move |conn| {
            store::seats_of(conn, &schedule_id.to_string())?
                .ok_or(ConcertError::ScheduleNotFound(schedule_id))
        })
        .await?;
    Ok(HttpResponse::Ok().json(seats))
}

/// Compares without leaking, through timing, how much of the key matched.
fn same_key(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn create_concert(
    state: web::Data<AppState>,
    body: web::Json<ConcertRequest>,
) -> Result<HttpResponse, ConcertError> {
    let concert = NewConcert::try_from(body.into_inner())?;
    let (created, schedules) = state
        .db
        .transaction(move |tx| Ok::<_, ConcertError>(store::insert_concert(tx, &concert)?))
        .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": created.id,
        "title": created.title,
        "venue": created.venue,
        "schedules": schedules,
    })))
}
