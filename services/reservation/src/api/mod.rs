//! HTTP: ask for a hold, watch it, cancel it. Every call needs the fan's
//! member token; asking for a hold also needs their own pass from the line.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::auth::member::Member;
use ticket_runtime::auth::pass::Pass;
use ticket_runtime::http::admin::{Page, PageQuery};
use ticket_runtime::http::utc_millis;
use ticket_runtime::http::waiters::{etag, WatchQuery};
use ticket_runtime::http::ErrorBody;
use ticket_runtime::ids::{ConcertId, PaymentId, ReservationId, ScheduleId, UserId};
use ticket_runtime::ApiError;

use crate::app::{ReservationError, Reservations};
use crate::domain::Status;
use crate::store::Reservation;

/// The service's API document (served at /docs, checked in as docs/api/reservation.json).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(request_hold, get_reservation, cancel_reservation, list_reservations),
    tags((name = "reservations", description = "Seat holds: asked for, watched, given up. \
        A hold is decided by the concert service through events: 201 when it answered \
        within the decision window, else 202 and a long poll on the reservation."),
        (name = "admin", description = "Read-only listings for `ticketctl audit`, behind \
        `X-Admin-Key`."))
)]
pub struct ApiDoc;

/// The document as generated from this module; the runtime adds the
/// shared parts (errors, credentials, health) when it serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

pub fn routes(cfg: &mut web::ServiceConfig, app: Reservations) {
    cfg.app_data(web::Data::new(app))
        .service(web::resource("/v1/reservations").post(request_hold))
        .service(
            web::resource("/v1/reservations/{id}")
                .get(get_reservation)
                .delete(cancel_reservation),
        )
        .service(
            ticket_runtime::http::admin::scope("/v1/admin")
                .service(web::resource("/reservations").get(list_reservations)),
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
            ReservationError::PassHoldLimit(_) => {
                ApiError::new(StatusCode::CONFLICT, "pass_hold_limit", self.to_string())
            }
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
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Reservation)]
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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct HoldRequest {
    pub schedule_id: ScheduleId,
    /// 1 to 50.
    #[schema(minimum = 1, maximum = 50)]
    pub seat_no: i64,
}

/// Ask for a hold on a seat, for the pass holder.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations",
    request_body = HoldRequest,
    security(("member_token" = [], "queue_pass" = [])),
    responses(
        (status = 201, description = "Decided: HELD, or REJECTED with a reason", body = ReservationBody,
            headers(("location" = String, description = "The reservation"),
                    ("etag" = String, description = "Its version, for If-None-Match"))),
        (status = 202, description = "PENDING: poll the location with ?wait_ms= and If-None-Match", body = ReservationBody,
            headers(("location" = String), ("etag" = String))),
        (status = 401, description = "`member_token_*`; `pass_missing`, `_malformed`, `_forged`, `_expired`, `_wrong_concert`, `_ended`", body = ErrorBody),
        (status = 403, description = "`pass_not_yours`", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
        (status = 409, description = "`pass_hold_limit`: the pass already has `reservation.max_live_per_pass` \
            reservations PENDING or HELD; pay for, cancel or wait out one of them first", body = ErrorBody),
        (status = 422, description = "`invalid_seat`", body = ErrorBody),
    ))]
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
    let location = format!("/v1/reservations/{}", reservation.id);
    let body = ReservationBody::from(reservation);
    // The tag to poll with: GET {location}?wait_ms= with If-None-Match.
    Ok(HttpResponse::build(status)
        .insert_header(("location", location))
        .insert_header(("etag", etag(&body)))
        .json(body))
}

/// The fan's reservation; with `wait_ms`, a long poll that answers when it
/// changes. Another fan's reservation is 404.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations",
    params(("id" = ReservationId, Path), WatchQuery<Status>,
        ("If-None-Match" = Option<String>, Header,
            description = "ETags the client has: answered at once when the reservation differs, else after the wait with 304")),
    security(("member_token" = [])),
    responses(
        (status = 200, description = "The reservation", body = ReservationBody,
            headers(("etag" = String, description = "Its version"))),
        (status = 304, description = "Unchanged since the version named in If-None-Match",
            headers(("etag" = String))),
        (status = 400, description = "`invalid_wait`, `invalid_seen_status`, `invalid_path`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 404, description = "`reservation_not_found`", body = ErrorBody),
    ))]
async fn get_reservation(
    app: web::Data<Reservations>,
    member: Member,
    id: web::Path<ReservationId>,
    query: web::Query<WatchQuery<Status>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), UserId::from(member.user_id));
    let poll = query.poll(&request, app.policy.max_wait_ms)?;
    let seen_status = query.seen(Status::NAMES)?;
    let current = app.own(id, user).await?;
    let seen = seen_status.unwrap_or(current.status);
    let reservation = if poll.wait.is_zero() {
        current
    } else {
        let is_news =
            |r: &Reservation| poll.is_news(|| ReservationBody::from(r.clone()), r.status != seen);
        app.watch(id, user, poll.wait, is_news).await?
    };
    Ok(poll.respond(&ReservationBody::from(reservation)))
}

/// Give up a PENDING or HELD reservation; the seat is released.
#[utoipa::path(delete, path = "/v1/reservations/{id}", tag = "reservations",
    params(("id" = ReservationId, Path)),
    security(("member_token" = [])),
    responses(
        (status = 200, description = "CANCELLED", body = ReservationBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 404, description = "`reservation_not_found`", body = ErrorBody),
        (status = 409, description = "`not_cancellable`: confirmed, expired or already cancelled", body = ErrorBody),
    ))]
async fn cancel_reservation(
    app: web::Data<Reservations>,
    member: Member,
    id: web::Path<ReservationId>,
) -> Result<HttpResponse, ReservationError> {
    let cancelled = app.cancel(id.into_inner(), member.user_id.into()).await?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(cancelled)))
}

/// Every reservation, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/admin/reservations", tag = "admin",
    params(PageQuery<ReservationId>),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of reservations", body = Page<ReservationBody, ReservationId>),
        (status = 400, description = "`invalid_limit`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`admin_key_invalid`", body = ErrorBody),
    ))]
async fn list_reservations(
    app: web::Data<Reservations>,
    query: web::Query<PageQuery<ReservationId>>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let reservations = app.page(query.after, limit).await?;
    let items = reservations
        .into_iter()
        .map(ReservationBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |r: &ReservationBody| r.id)))
}
