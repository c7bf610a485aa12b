//! HTTP: join the line, poll a token. Who joins is the member token's
//! subject, never a field of the body.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::auth::member::Member;
use ticket_runtime::http::ErrorBody;
use ticket_runtime::ids::{ConcertId, QueueTokenId, UserId};
use ticket_runtime::ApiError;

use crate::app::{Place, Queue, QueueError};
use crate::domain::{Ended, TokenStatus};

/// The service's API document (served at /docs, checked in as docs/api/queue.json).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(join, poll),
    tags((name = "queue", description = "The waiting line of a concert: fans are admitted in \
        arrival order while fewer than `max_active` are active, each with a signed pass \
        (the `Queue-Pass` of reservations and payments). A waiting fan polls its token."))
)]
pub struct ApiDoc;

/// The document as generated from this module; the runtime adds the
/// shared parts (errors, credentials, health) when it serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

pub fn routes(cfg: &mut web::ServiceConfig, app: Queue) {
    cfg.app_data(web::Data::new(app))
        .service(web::resource("/v1/queue/tokens").post(join))
        .service(web::resource("/v1/queue/tokens/{token}").get(poll));
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
}

impl ResponseError for QueueError {
    fn status_code(&self) -> StatusCode {
        self.api().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api().error_response()
    }
}

/// A place in the line as the API shows it; the pass only while active.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = QueueToken)]
pub struct TokenBody {
    pub token: QueueTokenId,
    pub user_id: UserId,
    pub concert_id: ConcertId,
    pub status: TokenStatus,
    /// Fans waiting ahead; 0 when active, absent once expired.
    pub position: Option<i64>,
    /// The signed pass to send as `Queue-Pass`, while active.
    pub pass: Option<String>,
    pub pass_expires_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<Ended>,
}

impl From<Place> for TokenBody {
    fn from(Place { token, position }: Place) -> TokenBody {
        let active = token.status == TokenStatus::Active;
        TokenBody {
            token: token.token,
            user_id: token.user_id,
            concert_id: token.concert_id,
            status: token.status,
            position,
            pass: token.pass.filter(|_| active),
            pass_expires_at: token
                .pass_expires_at
                .filter(|_| active)
                .map(|at| at.and_utc()),
            ended_reason: token.ended_reason,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct JoinRequest {
    pub concert_id: ConcertId,
}

/// Join the concert's line, as the member token's subject. Joining again
/// while in the line answers the same place (200).
#[utoipa::path(post, path = "/v1/queue/tokens", tag = "queue",
    request_body = JoinRequest,
    security(("member_token" = [])),
    responses(
        (status = 201, description = "In the line: ACTIVE with a pass, or WAITING with a position", body = TokenBody),
        (status = 200, description = "Already in the line: the same place", body = TokenBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 404, description = "`concert_not_found`", body = ErrorBody),
    ))]
async fn join(
    app: web::Data<Queue>,
    member: Member,
    body: web::Json<JoinRequest>,
) -> Result<HttpResponse, QueueError> {
    let (created, place) = app.join(member.user_id.into(), body.concert_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(TokenBody::from(place)))
}

/// The fan's place in the line: its position while waiting, its pass once
/// admitted. Another fan's token is 404.
#[utoipa::path(get, path = "/v1/queue/tokens/{token}", tag = "queue",
    params(("token" = QueueTokenId, Path)),
    security(("member_token" = [])),
    responses(
        (status = 200, description = "The place", body = TokenBody),
        (status = 401, description = "`member_token_*`", body = ErrorBody),
        (status = 404, description = "`token_not_found`", body = ErrorBody),
    ))]
async fn poll(
    app: web::Data<Queue>,
    member: Member,
    token: web::Path<QueueTokenId>,
) -> Result<HttpResponse, QueueError> {
    let place = app.poll(member.user_id.into(), token.into_inner()).await?;
    Ok(HttpResponse::Ok().json(TokenBody::from(place)))
}
