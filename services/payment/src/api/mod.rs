//! HTTP: pay for a held reservation, watch the payment. Every call needs the
//! fan's member token; paying also needs their own pass from the line.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::{Deserialize, Serialize};
use shared_events::{Envelope, PaymentRequested};
use std::time::Duration;
use ticket_runtime::member::Member;
use ticket_runtime::pass::{Pass, PassError};
use ticket_runtime::waiters::{wait_for, Waiters};
use ticket_runtime::{ApiError, Db, DbError};
use uuid::Uuid;

use crate::domain::{valid_idempotency_key, PaymentPolicy, Status};
use crate::store::{self, Payment, Step};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub policy: PaymentPolicy,
    pub waiters: Waiters,
}

pub fn routes(cfg: &mut web::ServiceConfig, state: AppState) {
    cfg.app_data(web::Data::new(state))
        .route("/v1/payments", web::post().to(pay))
        .route("/v1/payments/{id}", web::get().to(get_payment));
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error("Idempotency-Key must be 1 to 128 visible ASCII characters")]
    InvalidKey,
    #[error("this Idempotency-Key was used for reservation {0}")]
    KeyReused(String),
    #[error("no reservation {0} held by you")]
    ReservationNotFound(Uuid),
    #[error("reservation {0} cannot be paid: {1}")]
    NotPayable(Uuid, String),
    #[error("reservation {0} already has payment {1} ({2})")]
    AlreadyPaying(Uuid, String, &'static str),
    #[error("no payment {0}")]
    NotFound(Uuid),
    #[error("wait_ms must be 0 to {0}")]
    InvalidWait(u64),
    #[error("seen_status must be PENDING, COMPLETED or FAILED")]
    InvalidSeenStatus,
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for PaymentError {
    fn is_transient(&self) -> bool {
        matches!(self, PaymentError::Unexpected(e) if e.is_transient())
    }
}

impl From<DieselError> for PaymentError {
    fn from(error: DieselError) -> PaymentError {
        PaymentError::Unexpected(DbError::Query(error))
    }
}

impl PaymentError {
    fn api(&self) -> ApiError {
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, self.to_string());
        match self {
            PaymentError::Pass(e) => ApiError::from(*e),
            PaymentError::InvalidKey => {
                ApiError::bad_request("invalid_idempotency_key", self.to_string())
            }
            PaymentError::KeyReused(_) => conflict("idempotency_key_reused"),
            PaymentError::ReservationNotFound(_) => {
                ApiError::not_found("reservation_not_found", self.to_string())
            }
            PaymentError::NotPayable(..) => conflict("reservation_not_payable"),
            PaymentError::AlreadyPaying(..) => conflict("payment_in_progress"),
            PaymentError::NotFound(_) => ApiError::not_found("payment_not_found", self.to_string()),
            PaymentError::InvalidWait(_) => ApiError::bad_request("invalid_wait", self.to_string()),
            PaymentError::InvalidSeenStatus => {
                ApiError::bad_request("invalid_seen_status", self.to_string())
            }
            PaymentError::Unexpected(e) => ApiError::unexpected(e),
        }
    }

    fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            PaymentError::Unexpected(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            )))
        )
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

#[derive(Serialize)]
pub struct PaymentView {
    #[serde(flatten)]
    pub payment: Payment,
    pub steps: Vec<Step>,
}

async fn view(db: &Db, id: Uuid, user: Uuid) -> Result<PaymentView, PaymentError> {
    db.run(move |conn| {
        let payment = store::find(conn, id)?
            .filter(|p| p.user_id == user.to_string())
            .ok_or(PaymentError::NotFound(id))?;
        let steps = store::steps(conn, id)?;
        Ok(PaymentView { payment, steps })
    })
    .await
}

async fn watch(
    state: &AppState,
    id: Uuid,
    user: Uuid,
    seen: Status,
    wait: Duration,
) -> Result<PaymentView, PaymentError> {
    wait_for(
        &state.waiters,
        id,
        wait,
        || view(&state.db, id, user),
        |v| v.payment.status() != seen,
    )
    .await
}

fn answer(view: PaymentView) -> HttpResponse {
    let status = if view.payment.status() == Status::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    HttpResponse::build(status)
        .insert_header(("location", format!("/v1/payments/{}", view.payment.id)))
        .json(view)
}

#[derive(Deserialize)]
pub struct PayRequest {
    pub reservation_id: Uuid,
}

async fn pay(
    state: web::Data<AppState>,
    request: HttpRequest,
    member: Member,
    pass: Pass,
    body: web::Json<PayRequest>,
) -> Result<HttpResponse, PaymentError> {
    let pass = pass.of(&member)?;
    let claims = pass.0.clone();
    let user = member.user_id;
    if ticket_runtime::pass::is_ended(&state.db, &pass).await? {
        return Err(PassError::Ended.into());
    }
    let key = match request.headers().get(IDEMPOTENCY_KEY) {
        Some(value) => {
            let key = value.to_str().map_err(|_| PaymentError::InvalidKey)?;
            if !valid_idempotency_key(key) {
                return Err(PaymentError::InvalidKey);
            }
            Some(key.to_string())
        }
        None => None,
    };
    let reservation_id = body.reservation_id;
    let wait = Duration::from_millis(state.policy.decision_wait_ms);

    if let Some(key) = &key {
        let key = key.clone();
        let earlier = state
            .db
            .run(move |conn| Ok::<_, PaymentError>(store::find_by_key(conn, user, &key)?))
            .await?;
        if let Some(earlier) = earlier {
            return replay(&state, earlier, reservation_id, user, wait).await;
        }
    }

    // The hold may have been reported to the fan a moment before its event
    // reached this service's projection: wait for it briefly.
    let db = state.db.clone();
    let projected = wait_for(
        &state.waiters,
        reservation_id,
        wait,
        || {
            let db = db.clone();
            async move {
                db.run(move |conn| Ok::<_, PaymentError>(store::projected(conn, reservation_id)?))
                    .await
            }
        },
        Option::is_some,
    )
    .await?
    .filter(|r| r.user_id == user.to_string())
    .ok_or(PaymentError::ReservationNotFound(reservation_id))?;
    if projected.concert_id != claims.concert_id.to_string() {
        return Err(PassError::WrongConcert.into());
    }
    if projected.status != "HELD" {
        return Err(PaymentError::NotPayable(
            reservation_id,
            format!("it is {}", projected.status),
        ));
    }
    if projected.hold_expires_at <= Utc::now().naive_utc() {
        return Err(PaymentError::NotPayable(
            reservation_id,
            "its hold has expired".into(),
        ));
    }

    // Concurrent first requests race on the unique indexes (one key, one live
    // payment per reservation); the losers run again and see the winner.
    let mut attempt = 0;
    let payment = loop {
        attempt += 1;
        let (key, projected) = (key.clone(), projected.clone());
        let result = state
            .db
            .transaction(move |tx| {
                if let Some(key) = &key {
                    if let Some(earlier) = store::find_by_key(tx.conn(), user, key)? {
                        return Ok(earlier);
                    }
                }
                if let Some(live) = store::live_for_reservation(tx.conn(), reservation_id)? {
                    let status = live.status().as_str();
                    return Err(PaymentError::AlreadyPaying(reservation_id, live.id, status));
                }
                let id = Uuid::now_v7();
                store::insert_pending(tx.conn(), id, &projected, key.as_deref())?;
                let requested = Envelope::new(
                    PaymentRequested {
                        payment_id: id,
                        reservation_id,
                        user_id: user,
                        amount: projected.price,
                    },
                    reservation_id.to_string(),
                );
                store::record_step(tx.conn(), id, requested.event_id, "PaymentRequested", None)?;
                tx.publish(&requested)?;
                Ok::<_, PaymentError>(store::find(tx.conn(), id)?.expect("just inserted"))
            })
            .await;
        match result {
            Err(error) if error.is_unique_violation() && attempt < 3 => continue,
            other => break other?,
        }
    };
    if payment.reservation_uuid() != reservation_id {
        return Err(PaymentError::KeyReused(payment.reservation_id));
    }
    let view = watch(&state, payment.uuid(), user, Status::Pending, wait).await?;
    Ok(answer(view))
}

/// A retried request with a known Idempotency-Key: the first payment, as it stands now.
async fn replay(
    state: &AppState,
    earlier: Payment,
    reservation_id: Uuid,
    user: Uuid,
    wait: Duration,
) -> Result<HttpResponse, PaymentError> {
    if earlier.reservation_uuid() != reservation_id {
        return Err(PaymentError::KeyReused(earlier.reservation_id));
    }
    let view = watch(state, earlier.uuid(), user, Status::Pending, wait).await?;
    Ok(answer(view))
}

#[derive(Deserialize)]
pub struct WatchQuery {
    pub wait_ms: Option<u64>,
    pub seen_status: Option<String>,
}

/// Another member's payment is "not found" (404): whether it exists is
/// nobody else's business.
async fn get_payment(
    state: web::Data<AppState>,
    member: Member,
    id: web::Path<Uuid>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, PaymentError> {
    let id = id.into_inner();
    let user = member.user_id;
    let wait = query.wait_ms.unwrap_or(0);
    if wait > state.policy.max_wait_ms {
        return Err(PaymentError::InvalidWait(state.policy.max_wait_ms));
    }
    let seen = match &query.seen_status {
        Some(s) => Some(Status::parse(s).ok_or(PaymentError::InvalidSeenStatus)?),
        None => None,
    };
    let current = view(&state.db, id, user).await?;
    if wait == 0 {
        return Ok(HttpResponse::Ok().json(current));
    }
    let seen = seen.unwrap_or(current.payment.status());
    Ok(HttpResponse::Ok().json(watch(&state, id, user, seen, Duration::from_millis(wait)).await?))
}
