//! HTTP: balance, charges (with Idempotency-Key) and the ledger.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Deserialize;
use ticket_runtime::member::Member;
use ticket_runtime::{ApiError, Db, DbError};
use uuid::Uuid;

use crate::domain::{ChargeAmount, IdempotencyKey, InvalidAmount, InvalidIdempotencyKey, Limits};
use crate::store::{self, ChargeRefused};
use shared_events::{BalanceCharged, Envelope};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_PAGE: i64 = 100;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub limits: Limits,
}

pub fn routes(cfg: &mut web::ServiceConfig, state: AppState) {
    cfg.app_data(web::Data::new(state))
        .route("/v1/members/{user_id}/balance", web::get().to(balance))
        .route("/v1/members/{user_id}/charges", web::post().to(charge))
        .route("/v1/members/{user_id}/ledger", web::get().to(ledger));
}

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error(transparent)]
    InvalidAmount(#[from] InvalidAmount),
    #[error(transparent)]
    InvalidKey(#[from] InvalidIdempotencyKey),
    #[error("limit must be 1 to {MAX_PAGE}")]
    InvalidLimit,
    #[error("cursor must be a number from a previous page's next_cursor")]
    InvalidCursor,
    #[error("{0}")]
    Refused(ChargeRefused),
    #[error("a member may only see and charge their own wallet")]
    NotYours,
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for BalanceError {
    fn is_transient(&self) -> bool {
        matches!(self, BalanceError::Unexpected(e) if e.is_transient())
    }
}

impl From<DieselError> for BalanceError {
    fn from(error: DieselError) -> BalanceError {
        BalanceError::Unexpected(DbError::Query(error))
    }
}

impl From<ChargeRefused> for BalanceError {
    fn from(refused: ChargeRefused) -> BalanceError {
        match refused {
            ChargeRefused::Db(e) => e.into(),
            other => BalanceError::Refused(other),
        }
    }
}

impl BalanceError {
    fn api(&self) -> ApiError {
        let unprocessable =
            |code| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, self.to_string());
        match self {
            BalanceError::InvalidAmount(_) => unprocessable("invalid_amount"),
            BalanceError::InvalidKey(_) => {
                ApiError::bad_request("invalid_idempotency_key", self.to_string())
            }
            BalanceError::InvalidLimit => ApiError::bad_request("invalid_limit", self.to_string()),
            BalanceError::InvalidCursor => {
                ApiError::bad_request("invalid_cursor", self.to_string())
            }
            BalanceError::Refused(ChargeRefused::KeyReused { .. }) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                self.to_string(),
            ),
            BalanceError::Refused(_) => unprocessable("balance_limit_exceeded"),
            // 403, not 404: member ids are not secret, and the caller named
            // another member's wallet explicitly.
            BalanceError::NotYours => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", self.to_string())
            }
            BalanceError::Unexpected(e) => ApiError::unexpected(e),
        }
    }

    fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            BalanceError::Unexpected(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            )))
        )
    }
}

impl ResponseError for BalanceError {
    fn status_code(&self) -> StatusCode {
        self.api().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api().error_response()
    }
}

/// The wallet in the path must be the calling member's own.
fn own_wallet(member: Member, user_id: web::Path<Uuid>) -> Result<Uuid, BalanceError> {
    let user_id = user_id.into_inner();
    if user_id == member.user_id {
        Ok(user_id)
    } else {
        Err(BalanceError::NotYours)
    }
}

async fn balance(
    state: web::Data<AppState>,
    member: Member,
    user_id: web::Path<Uuid>,
) -> Result<HttpResponse, BalanceError> {
    let user_id = own_wallet(member, user_id)?;
    let balance = state
        .db
        .run(move |conn| Ok::<_, BalanceError>(store::balance_of(conn, &user_id.to_string())?))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "user_id": user_id, "balance": balance })))
}

#[derive(Deserialize)]
pub struct ChargeBody {
    pub amount: i64,
}

async fn charge(
    state: web::Data<AppState>,
    request: HttpRequest,
    member: Member,
    user_id: web::Path<Uuid>,
    body: web::Json<ChargeBody>,
) -> Result<HttpResponse, BalanceError> {
    let user_id = own_wallet(member, user_id)?;
    let amount = ChargeAmount::parse(body.amount, &state.limits)?;
    let key = match request.headers().get(IDEMPOTENCY_KEY) {
        Some(value) => Some(IdempotencyKey::try_from(
            value.to_str().map_err(|_| InvalidIdempotencyKey)?,
        )?),
        None => None,
    };
    // Two first requests with one key race to record it; the loser's
    // transaction is rolled back whole and, run again, replays the winner's.
    let mut attempt = 0;
    let (receipt, replayed) = loop {
        attempt += 1;
        let (key, limits) = (key.clone(), state.limits.clone());
        let result = state
            .db
            .transaction(move |tx| {
                let (receipt, entry) = store::charge(tx, user_id, amount, key.as_ref(), &limits)?;
                if let Some(entry) = &entry {
                    tx.publish(&Envelope::new(
                        BalanceCharged {
                            user_id,
                            entry_id: Uuid::parse_str(&entry.id).expect("own uuid"),
                            amount: entry.amount,
                            balance_after: entry.balance_after,
                        },
                        user_id.to_string(),
                    ))?;
                }
                Ok::<_, BalanceError>((receipt, entry.is_none()))
            })
            .await;
        match result {
            Err(error) if error.is_unique_violation() && attempt < 3 => continue,
            other => break other?,
        }
    };
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    Ok(response.json(receipt))
}

#[derive(Deserialize)]
pub struct LedgerQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn ledger(
    state: web::Data<AppState>,
    member: Member,
    user_id: web::Path<Uuid>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, BalanceError> {
    let user_id = own_wallet(member, user_id)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(BalanceError::InvalidLimit);
    }
    let before = match &query.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .ok()
                .filter(|c| *c > 0)
                .ok_or(BalanceError::InvalidCursor)?,
        ),
        None => None,
    };
    let entries = state
        .db
        .run(move |conn| {
            Ok::<_, BalanceError>(store::ledger_page(
                conn,
                &user_id.to_string(),
                before,
                limit,
            )?)
        })
        .await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.entry_no.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user_id": user_id,
        "entries": entries,
        "next_cursor": next_cursor,
    })))
}
