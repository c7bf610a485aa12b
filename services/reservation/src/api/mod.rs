//! HTTP: ask for a hold, watch it, cancel it. Every call needs the fan's
//! member token; asking for a hold also needs their own pass from the line.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::http::utc_millis;
use ticket_runtime::ids::{ConcertId, PaymentId, ReservationId, ScheduleId, UserId};
use ticket_runtime::member::Member;
use ticket_runtime::pass::Pass;
use ticket_runtime::waiters::WatchQuery;
use ticket_runtime::ApiError;

use crate::app::{ReservationError, Reservations};
use crate::domain::Status;
use crate::store::Reservation;

pub fn routes(cfg: &mut web::ServiceConfig, app: Reservations) {
    cfg.app_data(web::Data::new(app))
        .route("/v1/reservations", web::post().to(request_hold))
        .route("/v1/reservations/{id}", web::get().to(get_reservation))
        .route(
            "/v1/reservations/{id}",
            web::delete().to(cancel_reservation),
        );
}

impl ReservationError {
    fn api(&self) -> ApiError {
        match self {
            ReservationError::Pass(e) => ApiError::from(*e),
            ReservationError::InvalidSeat(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_seat",
                self.to_string(),
            ),
            ReservationError::ScheduleNotFound(_) => {
                ApiError::not_found("schedule_not_found", self.to_string())
            }
            ReservationError::NotFound(_) => {
                ApiError::not_found("reservation_not_found", self.to_string())
            }
            ReservationError::NotCancellable(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_cancellable", self.to_string())
            }
            ReservationError::Unexpected(e) => ApiError::unexpected(e),
        }
    }
}

impl From<ReservationError> for ApiError {
    fn from(error: ReservationError) -> ApiError {
        error.api()
    }
}

impl ResponseError for ReservationError {
    fn status_code(&self) -> StatusCode {
        self.api().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api().error_response()
    }
}

/// A reservation as the API shows it; the storage row is not the contract.
#[derive(Serialize)]
pub struct ReservationBody {
    pub id: ReservationId,
    pub user_id: UserId,
    pub concert_id: ConcertId,
    pub schedule_id: ScheduleId,
    pub seat_no: u32,
    pub status: Status,
    pub price: Option<i64>,
    #[serde(serialize_with = "utc_millis::option")]
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub payment_id: Option<PaymentId>,
    pub reason: Option<String>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<Reservation> for ReservationBody {
    fn from(r: Reservation) -> ReservationBody {
        ReservationBody {
            seat_no: r.seat(),
            hold_expires_at: r.hold_expires_at(),
            id: r.id,
            user_id: r.user_id,
            concert_id: r.concert_id,
            schedule_id: r.schedule_id,
            status: r.status,
            price: r.price,
            payment_id: r.payment_id,
            reason: r.reason,
            created_at: r.created_at.and_utc(),
            updated_at: r.updated_at.and_utc(),
        }
    }
}

#[derive(Deserialize)]
pub struct HoldRequest {
    pub schedule_id: ScheduleId,
    pub seat_no: i64,
}

async fn request_hold(
    app: web::Data<Reservations>,
    member: Member,
    pass: Pass,
    body: web::Json<HoldRequest>,
) -> Result<HttpResponse, ReservationError> {
    let pass = pass.of(&member)?;
    let reservation = app
        .request_hold(&pass, body.schedule_id, body.seat_no)
        .await?;
    // 201 once the concert service decided, 202 while it has not yet.
    let status = if reservation.status == Status::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let id = reservation.id;
    Ok(HttpResponse::build(status)
        .insert_header(("location", format!("/v1/reservations/{id}")))
        .json(ReservationBody::from(reservation)))
}

async fn get_reservation(
    app: web::Data<Reservations>,
    member: Member,
    id: web::Path<ReservationId>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), UserId::from(member.user_id));
    let wait = query.wait(app.policy.max_wait_ms)?;
    let seen = query.seen::<Status>(Status::NAMES)?;
    let current = app.own(id, user).await?;
    if wait.is_zero() {
        return Ok(HttpResponse::Ok().json(ReservationBody::from(current)));
    }
    let seen = seen.unwrap_or(current.status);
    let reservation = app.watch(id, user, seen, wait).await?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(reservation)))
}

async fn cancel_reservation(
    app: web::Data<Reservations>,
    member: Member,
    id: web::Path<ReservationId>,
) -> Result<HttpResponse, ReservationError> {
    let cancelled = app.cancel(id.into_inner(), member.user_id.into()).await?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(cancelled)))
}
