//! HTTP: balance, charges (with Idempotency-Key) and the ledger, each of the
//! calling member's own wallet.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::auth::member::Member;
use ticket_runtime::http::admin::{Page, PageQuery};
use ticket_runtime::http::idempotency::IdempotencyKey;
use ticket_runtime::http::utc_millis;
use ticket_runtime::http::ErrorBody;
use ticket_runtime::ids::{LedgerEntryId, PaymentId, ReservationId, UserId};
use ticket_runtime::ApiError;

use crate::app::{BalanceError, Wallets};
use crate::domain::EntryKind;
use crate::store::{AuditedDebit, AuditedWallet, LedgerEntry};

/// The service's API document (served at /docs, checked in as docs/api/member-balance.json).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(balance, charge, ledger, list_wallets, list_debits),
    tags((name = "wallets", description = "A fan's prepaid balance, in integer minor units, \
        with its append-only ledger (charges, debits for payments, refunds). Only the \
        fan's own wallet: another's is 403 `forbidden`."),
        (name = "admin", description = "Read-only listings for `ticketctl audit`, behind \
        `X-Admin-Key`."))
)]
pub struct ApiDoc;

/// The document as generated from this module; the runtime adds the
/// shared parts (errors, credentials, health) when it serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

pub fn routes(cfg: &mut web::ServiceConfig, app: Wallets) {
    cfg.app_data(web::Data::new(app))
        .service(web::resource("/v1/members/{user_id}/balance").get(balance))
        .service(web::resource("/v1/members/{user_id}/charges").post(charge))
        .service(web::resource("/v1/members/{user_id}/ledger").get(ledger))
        .service(
            ticket_runtime::http::admin::scope("/v1/admin")
                .service(web::resource("/wallets").get(list_wallets))
                .service(web::resource("/debits").get(list_debits)),
        );
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
            BalanceError::InvalidLimit(_) => {
                ApiError::bad_request("invalid_limit", self.to_string())
            }
            BalanceError::InvalidCursor => {
                ApiError::bad_request("invalid_cursor", self.to_string())
            }
            BalanceError::KeyReused { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                self.to_string(),
            ),
            BalanceError::BalanceLimit { .. } => unprocessable("balance_limit_exceeded"),
            // 403, not 404: member ids are not secret, and the caller named
            // another member's wallet explicitly.
            BalanceError::NotYours => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", self.to_string())
            }
            BalanceError::Unexpected(e) => ApiError::unexpected(e),
        }
    }
}

impl From<BalanceError> for ApiError {
    fn from(error: BalanceError) -> ApiError {
        error.api()
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
fn own_wallet(member: Member, user_id: web::Path<UserId>) -> Result<UserId, BalanceError> {
    let user_id = user_id.into_inner();
    if user_id == member.user_id {
        Ok(user_id)
    } else {
        Err(BalanceError::NotYours)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Balance)]
pub struct BalanceBody {
    pub user_id: UserId,
    pub balance: i64,
}

/// The fan's balance.
#[utoipa::path(get, path = "/v1/members/{user_id}/balance", tag = "wallets",
    params(("user_id" = UserId, Path, description = "The calling fan's own id (the member token's subject)")),
    security(("member_token" = [])),
    responses(
        (status = 200, description = "The balance (0 for a wallet never charged)", body = BalanceBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another fan's wallet", body = ErrorBody),
    ))]
async fn balance(
    app: web::Data<Wallets>,
    member: Member,
    user_id: web::Path<UserId>,
) -> Result<HttpResponse, BalanceError> {
    let user_id = own_wallet(member, user_id)?;
    let balance = app.balance(user_id).await?;
    Ok(HttpResponse::Ok().json(BalanceBody { user_id, balance }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChargeRequest {
    /// In minor units: 1 to the service's `balance.max_charge` (10000000 by
    /// default; the 422 `invalid_amount` names a deployment's own).
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub amount: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Charge)]
pub struct ChargeBody {
    pub balance: i64,
    pub entry_id: LedgerEntryId,
}

/// Top up the fan's balance. Retried with the same `Idempotency-Key` (and
/// body), the first charge is answered again and nothing is added.
#[utoipa::path(post, path = "/v1/members/{user_id}/charges", tag = "wallets",
    request_body = ChargeRequest,
    params(("user_id" = UserId, Path, description = "The calling fan's own id (the member token's subject)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = "^[!-~]+$",
            description = "Chosen by the client per charge (1-128 visible ASCII characters); retried with it, the first answer comes again. Without one, every request is a new charge")),
    security(("member_token" = [])),
    responses(
        (status = 201, description = "Charged (or the same charge answered again)", body = ChargeBody,
            headers(("idempotent-replayed" = String, description = "`true` when this key was charged before"))),
        (status = 400, description = "`invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another fan's wallet", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused` with another amount", body = ErrorBody),
        (status = 422, description = "`invalid_amount`, `balance_limit_exceeded`", body = ErrorBody),
    ))]
async fn charge(
    app: web::Data<Wallets>,
    request: HttpRequest,
    member: Member,
    user_id: web::Path<UserId>,
    body: web::Json<ChargeRequest>,
) -> Result<HttpResponse, BalanceError> {
    let user_id = own_wallet(member, user_id)?;
    // The amount is judged first, as it always was.
    let amount = app.charge_amount(body.amount)?;
    let key = IdempotencyKey::of(&request)?;
    let receipt = app.charge(user_id, amount, key).await?;
    let mut response = HttpResponse::Created();
    if receipt.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    Ok(response.json(ChargeBody {
        balance: receipt.balance,
        entry_id: receipt.entry_id,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Entries per page, newest first (20 by default).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Ledger)]
pub struct LedgerBody {
    pub user_id: UserId,
    pub entries: Vec<EntryBody>,
    /// Pass as `cursor` for the next (older) page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// One ledger line: never changed once written.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LedgerEntry)]
pub struct EntryBody {
    pub id: LedgerEntryId,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: i64,
    pub reference: Option<String>,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub at: DateTime<Utc>,
}

impl From<LedgerEntry> for EntryBody {
    fn from(e: LedgerEntry) -> EntryBody {
        EntryBody {
            id: e.id,
            kind: e.kind,
            amount: e.amount,
            balance_after: e.balance_after,
            reference: e.reference,
            at: e.created_at.and_utc(),
        }
    }
}

/// The fan's ledger, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/members/{user_id}/ledger", tag = "wallets",
    params(("user_id" = UserId, Path, description = "The calling fan's own id (the member token's subject)"), LedgerQuery),
    security(("member_token" = [])),
    responses(
        (status = 200, description = "A page of entries", body = LedgerBody),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`", body = ErrorBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another fan's wallet", body = ErrorBody),
    ))]
async fn ledger(
    app: web::Data<Wallets>,
    member: Member,
    user_id: web::Path<UserId>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, BalanceError> {
    let user_id = own_wallet(member, user_id)?;
    let limit = app.page_limit(query.limit)?;
    let before = match &query.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map_err(|_| BalanceError::InvalidCursor)?,
        ),
        None => None,
    };
    let entries = app.ledger(user_id, before, limit).await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.entry_no.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(LedgerBody {
        user_id,
        entries: entries.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// A wallet's balance beside the sum of its ledger (charges − debits +
/// refunds): the two are equal in a sound wallet.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditedWallet)]
pub struct AuditedWalletBody {
    pub user_id: UserId,
    pub balance: i64,
    pub ledger_total: i64,
}

impl From<AuditedWallet> for AuditedWalletBody {
    fn from(w: AuditedWallet) -> AuditedWalletBody {
        AuditedWalletBody {
            user_id: w.user_id,
            balance: w.balance,
            ledger_total: w.ledger_total,
        }
    }
}

/// A payment's debit and whether it was given back.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditedDebit)]
pub struct AuditedDebitBody {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub user_id: UserId,
    pub amount: i64,
    pub refunded: bool,
}

impl From<AuditedDebit> for AuditedDebitBody {
    fn from(d: AuditedDebit) -> AuditedDebitBody {
        AuditedDebitBody {
            payment_id: d.payment_id,
            reservation_id: d.reservation_id,
            user_id: d.user_id,
            amount: d.amount,
            refunded: d.refund_entry_id.is_some(),
        }
    }
}

/// Every wallet, in member order, with its ledger's sum.
#[utoipa::path(get, path = "/v1/admin/wallets", tag = "admin",
    params(PageQuery<UserId>),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of wallets", body = Page<AuditedWalletBody, UserId>),
        (status = 400, description = "`invalid_limit`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`admin_key_invalid`", body = ErrorBody),
    ))]
async fn list_wallets(
    app: web::Data<Wallets>,
    query: web::Query<PageQuery<UserId>>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let wallets = app.audit_wallets(query.after, limit).await?;
    let items = wallets.into_iter().map(AuditedWalletBody::from).collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |w: &AuditedWalletBody| w.user_id)))
}

/// Every payment debit, in payment order, and whether it was refunded.
#[utoipa::path(get, path = "/v1/admin/debits", tag = "admin",
    params(PageQuery<PaymentId>),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of debits", body = Page<AuditedDebitBody, PaymentId>),
        (status = 400, description = "`invalid_limit`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`admin_key_invalid`", body = ErrorBody),
    ))]
async fn list_debits(
    app: web::Data<Wallets>,
    query: web::Query<PageQuery<PaymentId>>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let debits = app.audit_debits(query.after, limit).await?;
    let items = debits.into_iter().map(AuditedDebitBody::from).collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |d: &AuditedDebitBody| d.payment_id)))
}
