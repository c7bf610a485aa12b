//! HTTP: pay for a held reservation, watch the payment. Every call needs the
//! fan's member token; paying also needs their own pass from the line.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::auth::member::Member;
use ticket_runtime::auth::pass::Pass;
use ticket_runtime::http::admin::{Page, PageQuery};
use ticket_runtime::http::idempotency::IdempotencyKey;
use ticket_runtime::http::utc_millis;
use ticket_runtime::http::waiters::{etag, WatchQuery};
use ticket_runtime::http::ErrorBody;
use ticket_runtime::ids::{PaymentId, ReservationId, UserId};
use ticket_runtime::ApiError;

use crate::app::{PaymentError, PaymentView, Payments};
use crate::domain::Status;
use crate::store::Payment;

/// The service's API document (served at /docs, checked in as docs/api/payment.json).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(pay, get_payment, list_payments),
    tags((name = "payments", description = "Paying for a held reservation from the prepaid \
        balance. The saga runs through events (debit, confirm, sell); the answer lists its \
        steps: 201 when decided within the decision window, else 202 and a long poll."),
        (name = "admin", description = "Read-only listings for `ticketctl audit`, behind \
        `X-Admin-Key`."))
)]
pub struct ApiDoc;

/// The document as generated from this module; the runtime adds the
/// shared parts (errors, credentials, health) when it serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

pub fn routes(cfg: &mut web::ServiceConfig, app: Payments) {
    cfg.app_data(web::Data::new(app))
        .service(web::resource("/v1/payments").post(pay))
        .service(web::resource("/v1/payments/{id}").get(get_payment))
        .service(
            ticket_runtime::http::admin::scope("/v1/admin")
                .service(web::resource("/payments").get(list_payments)),
        );
}

impl PaymentError {
    fn api(&self) -> ApiError {
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, self.to_string());
        match self {
            PaymentError::Pass(e) => ApiError::from(*e),
            PaymentError::InvalidKey(_) => {
                ApiError::bad_request("invalid_idempotency_key", self.to_string())
            }
            PaymentError::KeyReused(_) => conflict("idempotency_key_reused"),
            PaymentError::ReservationNotFound(_) => {
                ApiError::not_found("reservation_not_found", self.to_string())
            }
            PaymentError::NotPayable(..) => conflict("reservation_not_payable"),
            PaymentError::AlreadyPaying(..) => conflict("payment_in_progress"),
            PaymentError::NotFound(_) => ApiError::not_found("payment_not_found", self.to_string()),
            PaymentError::Unexpected(e) => ApiError::unexpected(e),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> ApiError {
        error.api()
    }
}

impl ResponseError for PaymentError {
    fn status_code(&self) -> StatusCode {
        self.api().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api().error_response()
    }
}

/// A payment as the API shows it, with the saga steps it went through.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
pub struct PaymentBody {
    #[serde(flatten)]
    pub payment: PaymentSummaryBody,
    pub steps: Vec<StepBody>,
}

/// One saga event the payment service heard about this payment.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Step)]
pub struct StepBody {
    pub event_type: String,
    pub detail: Option<String>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub at: DateTime<Utc>,
}

impl From<PaymentView> for PaymentBody {
    fn from(PaymentView { payment: p, steps }: PaymentView) -> PaymentBody {
        PaymentBody {
            payment: PaymentSummaryBody::from(p),
            steps: steps
                .into_iter()
                .map(|s| StepBody {
                    event_type: s.event_type,
                    detail: s.detail,
                    at: s.at.and_utc(),
                })
                .collect(),
        }
    }
}

/// 201 once decided, 202 while the saga is still running.
fn answer(view: PaymentView) -> HttpResponse {
    let status = if view.payment.status == Status::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let location = format!("/v1/payments/{}", view.payment.id);
    let body = PaymentBody::from(view);
    // The tag to poll with: GET {location}?wait_ms= with If-None-Match.
    HttpResponse::build(status)
        .insert_header(("location", location))
        .insert_header(("etag", etag(&body)))
        .json(body)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PayRequest {
    pub reservation_id: ReservationId,
}

/// Pay for the pass holder's held reservation from their balance. Retried
/// with the same `Idempotency-Key`, the same payment is answered; another
/// payment for a reservation being paid is refused.
#[utoipa::path(post, path = "/v1/payments", tag = "payments",
    request_body = PayRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$",
            description = "Chosen by the client per payment (1-128 visible ASCII characters); retried with it, the first answer comes again. Without one, a retry is a new request")),
    security(("member_token" = [], "queue_pass" = [])),
    responses(
        (status = 201, description = "Decided: COMPLETED or FAILED with a reason", body = PaymentBody,
            headers(("location" = String, description = "The payment"),
                    ("etag" = String, description = "Its version, for If-None-Match"))),
        (status = 202, description = "PENDING: poll the location with ?wait_ms= and If-None-Match", body = PaymentBody,
            headers(("location" = String), ("etag" = String))),
        (status = 400, description = "`invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`member_token_*`; `pass_missing`, `_malformed`, `_forged`, `_expired`, `_wrong_concert`, `_ended`", body = ErrorBody),
        (status = 403, description = "`pass_not_yours`", body = ErrorBody),
        (status = 404, description = "`reservation_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused` (with another body), `reservation_not_payable`, `payment_in_progress`", body = ErrorBody),
    ))]
async fn pay(
    app: web::Data<Payments>,
    request: HttpRequest,
    member: Member,
    pass: Pass,
    body: web::Json<PayRequest>,
) -> Result<HttpResponse, PaymentError> {
    let pass = pass.of(&member)?;
    let key = IdempotencyKey::of(&request)?;
    let view = app.pay(&pass, body.reservation_id, key).await?;
    Ok(answer(view))
}

/// Another member's payment is "not found" (404): whether it exists is
/// nobody else's business.
/// The fan's payment; with `wait_ms`, a long poll that answers when it changes.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = PaymentId, Path), WatchQuery<Status>,
        ("If-None-Match" = Option<String>, Header,
            description = "ETags the client has: answered at once when the payment differs, else after the wait with 304")),
    security(("member_token" = [])),
    responses(
        (status = 200, description = "The payment", body = PaymentBody,
            headers(("etag" = String, description = "Its version"))),
        (status = 304, description = "Unchanged since the version named in If-None-Match",
            headers(("etag" = String))),
        (status = 400, description = "`invalid_wait`, `invalid_seen_status`, `invalid_path`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 404, description = "`payment_not_found`", body = ErrorBody),
    ))]
async fn get_payment(
    app: web::Data<Payments>,
    member: Member,
    id: web::Path<PaymentId>,
    query: web::Query<WatchQuery<Status>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), UserId::from(member.user_id));
    let poll = query.poll(&request, app.policy.max_wait_ms)?;
    let seen_status = query.seen(Status::NAMES)?;
    let current = app.view(id, user).await?;
    let seen = seen_status.unwrap_or(current.payment.status);
    let view = if poll.wait.is_zero() {
        current
    } else {
        let is_news = |v: &PaymentView| {
            poll.is_news(|| PaymentBody::from(v.clone()), v.payment.status != seen)
        };
        app.watch(id, user, poll.wait, is_news).await?
    };
    Ok(poll.respond(&PaymentBody::from(view)))
}

/// A payment without its steps, as the admin listing shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PaymentSummary)]
pub struct PaymentSummaryBody {
    pub id: PaymentId,
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    /// Minor units (KRW has none: won).
    pub amount: i64,
    pub status: Status,
    /// Why it failed (`INSUFFICIENT_BALANCE`, `HOLD_EXPIRED`, `SAGA_TIMED_OUT`, ...).
    pub reason: Option<String>,
    /// A failed payment whose debit was given back.
    pub refunded: bool,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<Payment> for PaymentSummaryBody {
    fn from(p: Payment) -> PaymentSummaryBody {
        PaymentSummaryBody {
            id: p.id,
            reservation_id: p.reservation_id,
            user_id: p.user_id,
            amount: p.amount,
            status: p.status,
            reason: p.reason,
            refunded: p.refunded,
            created_at: p.created_at.and_utc(),
            updated_at: p.updated_at.and_utc(),
        }
    }
}

/// Every payment, in id order, a page at a time.
#[utoipa::path(get, path = "/v1/admin/payments", tag = "admin",
    params(PageQuery<PaymentId>),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of payments", body = Page<PaymentSummaryBody, PaymentId>),
        (status = 400, description = "`invalid_limit`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`admin_key_invalid`", body = ErrorBody),
    ))]
async fn list_payments(
    app: web::Data<Payments>,
    query: web::Query<PageQuery<PaymentId>>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let payments = app.page(query.after, limit).await?;
    let items = payments.into_iter().map(PaymentSummaryBody::from).collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |p: &PaymentSummaryBody| p.id)))
}
