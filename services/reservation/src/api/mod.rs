//! HTTP: ask for a hold, watch it, cancel it. Every call needs the fan's
//! member token; asking for a hold also needs their own pass from the line.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use diesel::result::Error as DieselError;
use serde::Deserialize;
use shared_events::{Envelope, ReservationCancelled, ReservationRequested};
use std::time::Duration;
use ticket_runtime::member::Member;
use ticket_runtime::pass::{Pass, PassError};
use ticket_runtime::waiters::{wait_for, Waiters};
use ticket_runtime::{ApiError, Db, DbError};
use uuid::Uuid;

use crate::domain::{reason, HoldPolicy, InvalidSeat, SeatNo, Status};
use crate::store::{self, NewReservation, Reservation};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub policy: HoldPolicy,
    pub waiters: Waiters,
}

pub fn routes(cfg: &mut web::ServiceConfig, state: AppState) {
    cfg.app_data(web::Data::new(state))
        .route("/v1/reservations", web::post().to(request_hold))
        .route("/v1/reservations/{id}", web::get().to(get_reservation))
        .route(
            "/v1/reservations/{id}",
            web::delete().to(cancel_reservation),
        );
}

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    InvalidSeat(#[from] InvalidSeat),
    #[error("no schedule {0}")]
    ScheduleNotFound(Uuid),
    #[error("no reservation {0}")]
    NotFound(Uuid),
    #[error("a {0} reservation cannot be cancelled")]
    NotCancellable(&'static str),
    #[error("wait_ms must be 0 to {0}")]
    InvalidWait(u64),
    #[error("seen_status must be one of PENDING, HELD, CONFIRMED, REJECTED, EXPIRED, CANCELLED")]
    InvalidSeenStatus,
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for ReservationError {
    fn is_transient(&self) -> bool {
        matches!(self, ReservationError::Unexpected(e) if e.is_transient())
    }
}

impl From<DieselError> for ReservationError {
    fn from(error: DieselError) -> ReservationError {
        ReservationError::Unexpected(DbError::Query(error))
    }
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
            ReservationError::InvalidWait(_) => {
                ApiError::bad_request("invalid_wait", self.to_string())
            }
            ReservationError::InvalidSeenStatus => {
                ApiError::bad_request("invalid_seen_status", self.to_string())
            }
            ReservationError::Unexpected(e) => ApiError::unexpected(e),
        }
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

/// The pass must not have ended early (its payment completed).
async fn live_pass(db: &Db, pass: &Pass) -> Result<(), ReservationError> {
    if ticket_runtime::pass::is_ended(db, pass).await? {
        return Err(PassError::Ended.into());
    }
    Ok(())
}

/// The fan's own reservation; another fan's is "not found" (404, not 403:
/// whether an id exists is nobody else's business).
async fn own(db: &Db, id: Uuid, member: Member) -> Result<Reservation, ReservationError> {
    let user = member.user_id.to_string();
    db.run(move |conn| {
        store::find(conn, id)?
            .filter(|r| r.user_id == user)
            .ok_or(ReservationError::NotFound(id))
    })
    .await
}

async fn watch(
    state: &AppState,
    id: Uuid,
    member: Member,
    seen: Status,
    wait: Duration,
) -> Result<Reservation, ReservationError> {
    wait_for(
        &state.waiters,
        id,
        wait,
        || own(&state.db, id, member),
        |r| r.status() != seen,
    )
    .await
}

#[derive(Deserialize)]
pub struct HoldRequest {
    pub schedule_id: Uuid,
    pub seat_no: i64,
}

async fn request_hold(
    state: web::Data<AppState>,
    member: Member,
    pass: Pass,
    body: web::Json<HoldRequest>,
) -> Result<HttpResponse, ReservationError> {
    let pass = pass.of(&member)?;
    live_pass(&state.db, &pass).await?;
    let seat_no = SeatNo::try_from(body.seat_no)?;
    let schedule_id = body.schedule_id;
    let claims = pass.0.clone();
    let wait = Duration::from_millis(state.policy.decision_wait_ms);
    // A schedule created a moment ago may not have reached this service's
    // catalog yet: wait for it briefly rather than refuse it.
    let db = state.db.clone();
    let concert = wait_for(
        &state.waiters,
        schedule_id,
        wait,
        || {
            let db = db.clone();
            async move {
                db.run(move |conn| {
                    Ok::<_, ReservationError>(store::concert_of_schedule(conn, schedule_id)?)
                })
                .await
            }
        },
        Option::is_some,
    )
    .await?
    .ok_or(ReservationError::ScheduleNotFound(schedule_id))?;
    if concert != claims.concert_id.to_string() {
        return Err(PassError::WrongConcert.into());
    }
    let id = Uuid::now_v7();
    state
        .db
        .transaction(move |tx| {
            let new = NewReservation {
                id,
                user_id: claims.user_id(),
                concert_id: claims.concert_id,
                schedule_id,
                seat_no,
            };
            store::insert_pending(tx.conn(), &new)?;
            tx.publish(&Envelope::new(
                ReservationRequested {
                    reservation_id: id,
                    user_id: new.user_id,
                    concert_id: new.concert_id,
                    schedule_id,
                    seat_no: seat_no.get(),
                },
                id.to_string(),
            ))?;
            Ok::<_, ReservationError>(())
        })
        .await?;
    let reservation = watch(&state, id, member, Status::Pending, wait).await?;
    let status = if reservation.status() == Status::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status)
        .insert_header(("location", format!("/v1/reservations/{id}")))
        .json(reservation))
}

#[derive(Deserialize)]
pub struct WatchQuery {
    pub wait_ms: Option<u64>,
    /// The status the caller last saw; by default, the current one.
    pub seen_status: Option<String>,
}

async fn get_reservation(
    state: web::Data<AppState>,
    member: Member,
    id: web::Path<Uuid>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, ReservationError> {
    let id = id.into_inner();
    let wait = query.wait_ms.unwrap_or(0);
    if wait > state.policy.max_wait_ms {
        return Err(ReservationError::InvalidWait(state.policy.max_wait_ms));
    }
    let seen = match &query.seen_status {
        Some(s) => Some(Status::parse(s).ok_or(ReservationError::InvalidSeenStatus)?),
        None => None,
    };
    let current = own(&state.db, id, member).await?;
    if wait == 0 {
        return Ok(HttpResponse::Ok().json(current));
    }
    let seen = seen.unwrap_or(current.status());
    let reservation = watch(&state, id, member, seen, Duration::from_millis(wait)).await?;
    Ok(HttpResponse::Ok().json(reservation))
}

async fn cancel_reservation(
    state: web::Data<AppState>,
    member: Member,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ReservationError> {
    let id = id.into_inner();
    let found = own(&state.db, id, member).await?;
    let cancelled = state
        .db
        .transaction(move |tx| {
            let current = store::find(tx.conn(), id)?.ok_or(ReservationError::NotFound(id))?;
            let status = current.status();
            if !status.cancellable() || !store::cancel(tx.conn(), id, status, reason::BY_USER)? {
                return Err(ReservationError::NotCancellable(status.as_str()));
            }
            tx.publish(&Envelope::new(
                ReservationCancelled {
                    reservation_id: id,
                    schedule_id: found.schedule_uuid(),
                    seat_no: found.seat(),
                    reason: reason::BY_USER.into(),
                    payment_id: None,
                },
                id.to_string(),
            ))?;
            store::find(tx.conn(), id)?.ok_or(ReservationError::NotFound(id))
        })
        .await?;
    state.waiters.wake(id);
    Ok(HttpResponse::Ok().json(cancelled))
}
