//! HTTP: pay for a held reservation, watch the payment. Every call needs the
//! fan's member token; paying also needs their own pass from the line.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::http::utc_millis;
use ticket_runtime::idempotency::IdempotencyKey;
use ticket_runtime::ids::{PaymentId, ReservationId, UserId};
use ticket_runtime::member::Member;
use ticket_runtime::pass::Pass;
use ticket_runtime::waiters::WatchQuery;
use ticket_runtime::ApiError;

use crate::app::{PaymentError, PaymentView, Payments};
use crate::domain::Status;

pub fn routes(cfg: &mut web::ServiceConfig, app: Payments) {
    cfg.app_data(web::Data::new(app))
        .route("/v1/payments", web::post().to(pay))
        .route("/v1/payments/{id}", web::get().to(get_payment));
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
#[derive(Serialize)]
pub struct PaymentBody {
    pub id: PaymentId,
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    pub amount: i64,
    pub status: Status,
    pub reason: Option<String>,
    pub refunded: bool,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub updated_at: DateTime<Utc>,
    pub steps: Vec<StepBody>,
}

#[derive(Serialize)]
pub struct StepBody {
    pub event_type: String,
    pub detail: Option<String>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub at: DateTime<Utc>,
}

impl From<PaymentView> for PaymentBody {
    fn from(PaymentView { payment: p, steps }: PaymentView) -> PaymentBody {
        PaymentBody {
            id: p.id,
            reservation_id: p.reservation_id,
            user_id: p.user_id,
            amount: p.amount,
            status: p.status,
            reason: p.reason,
            refunded: p.refunded,
            created_at: p.created_at.and_utc(),
            updated_at: p.updated_at.and_utc(),
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
    HttpResponse::build(status)
        .insert_header(("location", format!("/v1/payments/{}", view.payment.id)))
        .json(PaymentBody::from(view))
}

#[derive(Deserialize)]
pub struct PayRequest {
    pub reservation_id: ReservationId,
}

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
async fn get_payment(
    app: web::Data<Payments>,
    member: Member,
    id: web::Path<PaymentId>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), UserId::from(member.user_id));
    let wait = query.wait(app.policy.max_wait_ms)?;
    let seen = query.seen::<Status>(Status::NAMES)?;
    let current = app.view(id, user).await?;
    if wait.is_zero() {
        return Ok(HttpResponse::Ok().json(PaymentBody::from(current)));
    }
    let seen = seen.unwrap_or(current.payment.status);
    let view = app.watch(id, user, seen, wait).await?;
    Ok(HttpResponse::Ok().json(PaymentBody::from(view)))
}
