//! Long-polling without busy-polling: a request waiting for an entity to
//! change parks on a notification that the code making the change fires
//! after its commit. A coarse re-check covers changes committed by another
//! instance of the service, which cannot notify this one.
//!
//! Hand-written on `tokio::sync::Notify`: what it needs — wake the waiters
//! of one entity id after a commit, forget ids nobody waits on, re-read
//! now and then for the other instances — is a map of notifications, and
//! no crate we know does it with less.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::http::ApiError;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use std::marker::PhantomData;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::Required;
use utoipa::{IntoParams, PartialSchema};

/// How often a waiter re-reads on its own (for changes from other instances).
pub const RECHECK: Duration = Duration::from_millis(500);

/// A notification per entity, with how many requests wait on it.
type Registry = HashMap<Uuid, (Arc<Notify>, usize)>;

#[derive(Clone, Default)]
pub struct Waiters {
    entries: Arc<Mutex<Registry>>,
}

/// A registration; dropping it unregisters.
pub struct Waiter {
    waiters: Waiters,
    id: Uuid,
    notify: Arc<Notify>,
}

impl Waiters {
    /// Register before reading the current state, so no change is missed.
    pub fn register(&self, id: Uuid) -> Waiter {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries
            .entry(id)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiter {
            waiters: self.clone(),
            id,
            notify: entry.0.clone(),
        }
    }

    /// Wakes everyone waiting on `id` (call after the change committed).
    pub fn wake(&self, id: Uuid) {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((notify, _)) = entries.get(&id) {
            notify.notify_waiters();
        }
    }
}

impl Waiter {
    /// Until woken, `RECHECK` passes, or `limit` — whichever is first.
    pub async fn changed_or(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit.min(RECHECK), self.notify.notified()).await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut entries = self
            .waiters
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                entries.remove(&self.id);
            }
        }
    }
}

/// Re-reads with `read` until `done` says the state is final for this
/// caller, or `wait` has passed; returns the last state read.
pub async fn wait_for<T, E, R, Fut>(
    waiters: &Waiters,
    id: Uuid,
    wait: Duration,
    mut read: R,
    done: impl Fn(&T) -> bool,
) -> Result<T, E>
where
    R: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let waiter = waiters.register(id);
        let state = read().await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if done(&state) || left.is_zero() {
            return Ok(state);
        }
        waiter.changed_or(left).await;
    }
}

/// `?wait_ms=&seen_status=` of a long-poll: how long the caller will wait
/// for a change, and the status it last saw (by default, the current one),
/// one of the statuses `S`.
/// A client that names the version it has (`If-None-Match` with the
/// `ETag` of its last answer) gets an answer at once when the resource
/// already differs, and `304 Not Modified` when it still has not changed
/// after the wait; see [`Poll`].
#[derive(Debug, serde::Deserialize)]
pub struct WatchQuery<S> {
    pub wait_ms: Option<u64>,
    /// Read as text, so that a name `S` does not have is 400
    /// `invalid_seen_status` naming the ones it has (see [`WatchQuery::seen`]).
    pub seen_status: Option<String>,
    #[serde(skip)]
    status: PhantomData<S>,
}

impl<S> Default for WatchQuery<S> {
    fn default() -> WatchQuery<S> {
        WatchQuery {
            wait_ms: None,
            seen_status: None,
            status: PhantomData,
        }
    }
}

/// The wait's bound as the services ship it (`max_wait_ms`); a deployment
/// may set another, which its 400 `invalid_wait` names.
const DOCUMENTED_MAX_WAIT_MS: u64 = 30_000;

/// By hand, as utoipa's derive cannot take the status type: the document
/// lists `seen_status` as `S`'s names and `wait_ms` with its bounds.
impl<S: PartialSchema> IntoParams for WatchQuery<S> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let wait = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .maximum(Some(DOCUMENTED_MAX_WAIT_MS));
        vec![
            ParameterBuilder::new()
                .name("wait_ms")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(format!(
                    "How long to wait for a change before answering, in milliseconds \
                     (0, the default, answers at once; at most the service's \
                     `max_wait_ms`, {DOCUMENTED_MAX_WAIT_MS} by default)."
                )))
                .schema(Some(wait))
                .build(),
            ParameterBuilder::new()
                .name("seen_status")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "The status the client last saw: the wait ends when the status \
                     differs (default: the current status). `If-None-Match` with the \
                     last `ETag` does the same for any change, and answers at once \
                     when the client's version is already out of date.",
                ))
                .schema(Some(S::schema()))
                .build(),
        ]
    }
}

impl<S> WatchQuery<S> {
    /// The wait asked for; beyond `max_ms`, 400 `invalid_wait`.
    pub fn wait(&self, max_ms: u64) -> Result<Duration, ApiError> {
        let wait_ms = self.wait_ms.unwrap_or(0);
        if wait_ms > max_ms {
            return Err(ApiError::bad_request(
                "invalid_wait",
                format!("wait_ms must be 0 to {max_ms}"),
            ));
        }
        Ok(Duration::from_millis(wait_ms))
    }

    /// The wait, and the versions the caller has (`If-None-Match`).
    pub fn poll(&self, request: &HttpRequest, max_ms: u64) -> Result<Poll, ApiError> {
        let seen = request
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/").to_string())
            .filter(|tag| !tag.is_empty())
            .collect();
        Ok(Poll {
            wait: self.wait(max_ms)?,
            seen,
        })
    }

    /// The status the caller saw, as `S`; a name `S` does not have is 400
    /// `invalid_seen_status`, naming the accepted ones.
    pub fn seen(&self, names: &str) -> Result<Option<S>, ApiError>
    where
        S: FromStr,
    {
        self.seen_status
            .as_deref()
            .map(|seen| {
                seen.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_seen_status",
                        format!("seen_status must be one of {names}"),
                    )
                })
            })
            .transpose()
    }
}

/// A long-poll read: how long to wait, and the `ETag`s the client has.
#[derive(Debug, Clone)]
pub struct Poll {
    pub wait: Duration,
    seen: Vec<String>,
}

impl Poll {
    /// Whether a state is news to the client: when it named versions, one
    /// whose representation (`body`, made only then) is none of them;
    /// otherwise one whose status differs from the status it saw.
    pub fn is_news<B: Serialize>(&self, body: impl FnOnce() -> B, status_differs: bool) -> bool {
        if self.seen.is_empty() {
            status_differs
        } else {
            !self.knows(&etag(&body()))
        }
    }

    fn knows(&self, tag: &str) -> bool {
        self.seen.iter().any(|seen| seen == "*" || seen == tag)
    }

    /// 304 when the client has this representation, else 200 with it;
    /// both carry its `ETag`.
    pub fn respond(&self, body: &impl Serialize) -> HttpResponse {
        let tag = etag(body);
        if self.knows(&tag) {
            return HttpResponse::NotModified()
                .insert_header((header::ETAG, tag))
                .finish();
        }
        HttpResponse::Ok()
            .insert_header((header::ETAG, tag))
            .json(body)
    }
}

/// A strong `ETag` of a representation: a digest of its JSON, so that
/// every change a client could see gives another tag, and instances of a
/// service agree on it without sharing anything.
pub fn etag(body: &impl Serialize) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(body).unwrap_or_default();
    let digest = sha2::Sha256::digest(&json);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_wake_ends_the_wait_at_once() {
        let waiters = Waiters::default();
        let id = Uuid::new_v4();
        let state = Arc::new(AtomicU32::new(0));
        let (w, s) = (waiters.clone(), state.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.store(1, Ordering::SeqCst);
            w.wake(id);
        });
        let started = std::time::Instant::now();
        let seen: Result<u32, ()> = wait_for(
            &waiters,
            id,
            Duration::from_secs(5),
            || {
                let s = state.clone();
                async move { Ok(s.load(Ordering::SeqCst)) }
            },
            |v| *v == 1,
        )
        .await;
        assert_eq!(seen, Ok(1));
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "woken, not re-checked"
        );
        assert!(
            waiters.entries.lock().unwrap().is_empty(),
            "registration dropped"
        );
    }

    #[tokio::test]
    async fn without_a_change_the_wait_ends_at_its_limit() {
        let waiters = Waiters::default();
        let started = std::time::Instant::now();
        let seen: Result<u32, ()> = wait_for(
            &waiters,
            Uuid::new_v4(),
            Duration::from_millis(120),
            || async { Ok(0) },
            |v| *v == 1,
        )
        .await;
        assert_eq!(seen, Ok(0));
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn a_named_version_decides_what_is_news_and_what_is_not_modified() {
        let body = serde_json::json!({"status": "HELD"});
        let current = etag(&body);
        let request = actix_web::test::TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, format!("\"old\", W/{current}")))
            .to_http_request();
        let poll = WatchQuery::<String>::default()
            .poll(&request, 1000)
            .unwrap();
        assert!(
            !poll.is_news(|| &body, true),
            "its version: not news, whatever the status"
        );
        let changed = serde_json::json!({"status": "CONFIRMED"});
        assert!(poll.is_news(|| &changed, false));
        assert_eq!(poll.respond(&body).status(), 304);
        assert_eq!(poll.respond(&changed).status(), 200);

        let bare = actix_web::test::TestRequest::default().to_http_request();
        let poll = WatchQuery::<String>::default().poll(&bare, 1000).unwrap();
        assert!(poll.is_news(|| &body, true) && !poll.is_news(|| &body, false));
        let response = poll.respond(&body);
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get(header::ETAG).unwrap(),
            current.as_str()
        );
    }
}
