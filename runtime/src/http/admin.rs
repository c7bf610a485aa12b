//! The admin API's credential: one key per deployment (`APP__ADMIN__KEY`,
//! or `APP__ADMIN__KEY_FILE`), sent as `X-Admin-Key`. Every service has
//! admin endpoints (the concert service's catalog changes, and every
//! service's read-only audit listings that `ticketctl audit` walks), all
//! under [`scope`], where the key is checked before anything else the
//! caller sent is read: an unauthenticated caller learns nothing about
//! valid requests.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, Error};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::Required;
use utoipa::{IntoParams, PartialSchema};

use crate::config::{AdminSettings, Secret};
use crate::http::ApiError;

pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// The shortest admin key accepted: long enough not to be guessed.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// The key the admin endpoints ask for.
#[derive(Clone)]
pub struct AdminKey(Secret);

impl AdminKey {
    pub fn from_settings(settings: &AdminSettings) -> anyhow::Result<AdminKey> {
        // Trimmed once, here: the key the length check accepts is the key
        // callers must send, without the stray spaces of a variable or a
        // key file (which an HTTP header cannot carry anyway).
        match settings.key.as_ref().map(|key| key.expose().trim()) {
            Some(key) if key.len() >= MIN_ADMIN_KEY_LEN => Ok(AdminKey(Secret::new(key))),
            _ => anyhow::bail!(
                "APP__ADMIN__KEY (or APP__ADMIN__KEY_FILE) must be set to at least \
                 {MIN_ADMIN_KEY_LEN} characters (`ticketctl up` and `ticketctl secrets` make \
                 one; `openssl rand -hex 16` makes one too)"
            ),
        }
    }

    /// Compares in time independent of where the keys differ, so the
    /// answer's timing does not reveal a prefix of the key.
    pub fn admits(&self, given: &[u8]) -> bool {
        same_secret(given, self.0.expose().as_bytes())
    }
}

/// Whether two secrets are equal, in time independent of where they
/// differ (only their lengths show).
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A scope whose routes answer only callers with the admin key
/// (401 `admin_key_invalid` otherwise).
pub fn scope(
    path: &str,
) -> actix_web::Scope<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    web::scope(path).wrap(from_fn(require_admin_key))
}

async fn require_admin_key(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let given = request
        .headers()
        .get(ADMIN_KEY_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let admitted = request
        .app_data::<web::Data<AdminKey>>()
        .is_some_and(|key| key.admits(given));
    if admitted {
        next.call(request).await
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_key_invalid",
            "this needs the admin key in X-Admin-Key",
        )
        .into())
    }
}

/// One page of an admin listing, in the order of its key: `after` is the
/// `next` of the previous page (absent for the first).
#[derive(Debug, Deserialize)]
pub struct PageQuery<K> {
    pub after: Option<K>,
    pub limit: Option<i64>,
}

pub const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 500;

/// By hand, as utoipa's derive cannot take the key's type parameter: the
/// document shows `after` as the key's own schema (a UUID, or the seat
/// listing's `SCHEDULE_ID/SEAT_NO`) and `limit` with its bounds, which is
/// what the handlers accept.
impl<K: PartialSchema> IntoParams for PageQuery<K> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let limit = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(MAX_PAGE));
        vec![
            ParameterBuilder::new()
                .name("after")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "The `next` of the previous page; absent for the first.",
                ))
                .schema(Some(K::schema()))
                .build(),
            ParameterBuilder::new()
                .name("limit")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(format!(
                    "Items per page, 1 to {MAX_PAGE} (default {DEFAULT_PAGE})."
                )))
                .schema(Some(limit))
                .build(),
        ]
    }
}

impl<K> PageQuery<K> {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be 1 to {MAX_PAGE}, not {n}"),
            )),
        }
    }
}

/// A page of items and where the next one starts (`null` on the last).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    #[schema(value_type = Option<String>)]
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// A full page has a next one (possibly empty); a short page is the last.
    pub fn of(items: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Page<T, K> {
        let full = i64::try_from(items.len()).is_ok_and(|n| n >= limit);
        let next = if full { items.last().map(key) } else { None };
        Page { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    fn key(configured: &str) -> anyhow::Result<AdminKey> {
        AdminKey::from_settings(&AdminSettings {
            key: Some(Secret::new(configured)),
        })
    }

    #[test]
    fn a_key_configured_with_surrounding_spaces_admits_the_key_itself() {
        let key = key("  test-admin-key-0123456789 \n").unwrap();
        assert!(key.admits(b"test-admin-key-0123456789"));
    }

    #[test]
    fn a_key_short_once_trimmed_is_refused() {
        assert!(key("   short-key      ").is_err());
        assert!(key("0123456789abcdef").is_ok());
    }
}
