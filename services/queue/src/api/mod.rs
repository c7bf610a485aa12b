//! HTTP: join the line, poll a token.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use ticket_runtime::member::Member;
use ticket_runtime::pass::PassSigner;
use ticket_runtime::{ApiError, Db, DbError};
use uuid::Uuid;

use crate::domain::{QueuePolicy, TokenStatus};
use crate::store::{self, QueueToken};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub policy: QueuePolicy,
    pub signer: Arc<PassSigner>,
}

pub fn routes(cfg: &mut web::ServiceConfig, state: AppState) {
    cfg.app_data(web::Data::new(state))
        .route("/v1/queue/tokens", web::post().to(join))
        .route("/v1/queue/tokens/{token}", web::get().to(poll));
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no concert {0} is open for queueing")]
    ConcertNotFound(Uuid),
    #[error("no queue token {0}")]
    TokenNotFound(Uuid),
    #[error(transparent)]
    Unexpected(#[from] DbError),
}

impl ticket_runtime::Transient for QueueError {
    fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unexpected(e) if e.is_transient())
    }
}

impl From<DieselError> for QueueError {
    fn from(error: DieselError) -> QueueError {
        QueueError::Unexpected(DbError::Query(error))
    }
}

impl QueueError {
    fn api(&self) -> ApiError {
        match self {
            QueueError::ConcertNotFound(_) => {
                ApiError::not_found("concert_not_found", self.to_string())
            }
            QueueError::TokenNotFound(_) => {
                ApiError::not_found("token_not_found", self.to_string())
            }
            QueueError::Unexpected(e) => ApiError::unexpected(e),
        }
    }

    fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            QueueError::Unexpected(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            )))
        )
    }
}

impl ResponseError for QueueError {
    fn status_code(&self) -> StatusCode {
        self.api().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api().error_response()
    }
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub token: String,
    pub user_id: String,
    pub concert_id: String,
    pub status: &'static str,
    /// Fans waiting ahead; 0 when active, absent once expired.
    pub position: Option<i64>,
    pub pass: Option<String>,
    pub pass_expires_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<String>,
}

fn view(token: QueueToken, position: Option<i64>) -> TokenView {
    let status = token.status();
    let active = status == TokenStatus::Active;
    TokenView {
        status: status.as_str(),
        position,
        pass: token.pass.filter(|_| active),
        pass_expires_at: token
            .pass_expires_at
            .filter(|_| active)
            .map(|at| at.and_utc()),
        ended_reason: token.ended_reason,
        token: token.token,
        user_id: token.user_id,
        concert_id: token.concert_id,
    }
}

/// Who joins is the member token's subject, never a field of the body.
#[derive(Deserialize)]
pub struct JoinRequest {
    pub concert_id: Uuid,
}

async fn join(
    state: web::Data<AppState>,
    member: Member,
    body: web::Json<JoinRequest>,
) -> Result<HttpResponse, QueueError> {
    let user_id = member.user_id;
    let concert_id = body.into_inner().concert_id;
    // A fan asking twice at the same moment: one insert wins the live-token
    // index, the other's transaction is rolled back and, run again, finds it.
    let mut attempt = 0;
    let (created, token_view) = loop {
        attempt += 1;
        let (policy, signer) = (state.policy.clone(), state.signer.clone());
        let result = state
            .db
            .transaction(move |tx| {
                let now = Utc::now();
                if let Some(existing) = store::find_live(tx.conn(), user_id, concert_id)? {
                    store::touch(tx.conn(), &existing, now, &policy)?;
                    let position = store::position(tx.conn(), &existing)?;
                    return Ok((false, view(existing, position)));
                }
                if !store::is_known_concert(tx.conn(), concert_id)? {
                    return Err(QueueError::ConcertNotFound(concert_id));
                }
                let token = store::join(tx.conn(), user_id, concert_id, now)?;
                store::admit(tx, &concert_id.to_string(), &policy, &signer, now)?;
                let joined = store::find(tx.conn(), token)?.expect("just inserted");
                let position = store::position(tx.conn(), &joined)?;
                Ok::<_, QueueError>((true, view(joined, position)))
            })
            .await;
        match result {
            Err(error) if error.is_unique_violation() && attempt < 3 => continue,
            other => break other?,
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(token_view))
}

/// Another member's token is "not found": its id says nothing, and its pass
/// is a credential.
async fn poll(
    state: web::Data<AppState>,
    member: Member,
    token: web::Path<Uuid>,
) -> Result<HttpResponse, QueueError> {
    let token = token.into_inner();
    let policy = state.policy.clone();
    let me = member.user_id.to_string();
    let token_view = state
        .db
        .run(move |conn| {
            let found = store::find(conn, token)?
                .filter(|t| t.user_id == me)
                .ok_or(QueueError::TokenNotFound(token))?;
            store::touch(conn, &found, Utc::now(), &policy)?;
            let position = store::position(conn, &found)?;
            Ok::<_, QueueError>(view(found, position))
        })
        .await?;
    Ok(HttpResponse::Ok().json(token_view))
}
