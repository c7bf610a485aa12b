//! Who may use the console: the deployment's admin key, given once on the
//! sign-in page, buys a session (a random id in an HttpOnly, SameSite=Strict
//! cookie; Secure when the console is reached over TLS). Every action also
//! carries the session's CSRF token in a header, so a page of another site
//! can neither read nor act, even in a browser that ignores SameSite.
//!
//! Failed sign-ins are counted and limited per client address and in all:
//! a guesser is slowed to a few tries a minute. The global limit means a
//! flood of wrong keys can keep the operator out for a minute too; for an
//! admin console that is the safer side. The key is never logged, never
//! put in a URL, and compared in constant time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ticket_runtime::http::admin::AdminKey;

pub const COOKIE: &str = "console_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts, used or not.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The window in which failed sign-ins are counted.
const WINDOW: Duration = Duration::from_secs(60);
/// Failed sign-ins allowed per client address in a window.
const PER_CLIENT: usize = 5;
/// Failed sign-ins allowed from everyone together in a window.
const IN_ALL: usize = 30;

struct Session {
    csrf: String,
    expires: Instant,
}

/// What a sign-in attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    /// The session id and its CSRF token.
    Admitted {
        session: String,
        csrf: String,
    },
    WrongKey,
    /// Too many failures lately; try again after this long.
    Limited(Duration),
}

pub struct Sessions {
    key: AdminKey,
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<Vec<(Instant, IpAddr)>>,
    failed_total: AtomicU64,
}

impl Sessions {
    pub fn new(key: AdminKey) -> Sessions {
        Sessions {
            key,
            open: Mutex::new(HashMap::new()),
            failures: Mutex::new(Vec::new()),
            failed_total: AtomicU64::new(0),
        }
    }

    /// Checks `given` against the admin key, unless `client` (or everyone)
    /// failed too often lately; a limited attempt is not even compared.
    pub fn sign_in(&self, given: &str, client: IpAddr, now: Instant) -> anyhow::Result<SignIn> {
        {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            failures.retain(|(at, _)| now.duration_since(*at) < WINDOW);
            let mine: Vec<Instant> = failures
                .iter()
                .filter(|(_, ip)| *ip == client)
                .map(|(at, _)| *at)
                .collect();
            let limiting = if mine.len() >= PER_CLIENT {
                mine.first().copied()
            } else if failures.len() >= IN_ALL {
                failures.first().map(|(at, _)| *at)
            } else {
                None
            };
            if let Some(oldest) = limiting {
                return Ok(SignIn::Limited(
                    WINDOW.saturating_sub(now.duration_since(oldest)),
                ));
            }
        }
        if !self.key.admits(given.trim().as_bytes()) {
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((now, client));
            let total = self.failed_total.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("console: failed sign-in from {client} ({total} since start)");
            return Ok(SignIn::WrongKey);
        }
        let session = crate::secrets::random_hex(32)?;
        let csrf = crate::secrets::random_hex(32)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.expires > now);
        open.insert(
            session.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + LIFETIME,
            },
        );
        Ok(SignIn::Admitted { session, csrf })
    }

    /// The CSRF token of a live session.
    pub fn csrf_of(&self, session: &str, now: Instant) -> Option<String> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(session)
            .filter(|s| s.expires > now)
            .map(|s| s.csrf.clone())
    }

    pub fn sign_out(&self, session: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }

    /// Failed sign-ins since the console started.
    pub fn failed_total(&self) -> u64 {
        self.failed_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticket_runtime::config::{AdminSettings, Secret};

    const KEY: &str = "0123456789abcdef0123";

    fn sessions() -> Sessions {
        let settings = AdminSettings {
            key: Some(Secret::new(KEY)),
        };
        Sessions::new(AdminKey::from_settings(&settings).unwrap())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_key_opens_a_session_with_its_own_csrf_token_until_sign_out() {
        let sessions = sessions();
        let now = Instant::now();
        let SignIn::Admitted { session, csrf } = sessions.sign_in(KEY, ip(1), now).unwrap() else {
            panic!("the right key is admitted");
        };
        assert_ne!(session, csrf);
        assert_eq!(session.len(), 64);
        assert_eq!(sessions.csrf_of(&session, now), Some(csrf.clone()));
        assert_eq!(sessions.csrf_of(&csrf, now), None, "a token is no session");
        assert_eq!(sessions.csrf_of(&session, now + LIFETIME), None, "expired");
        sessions.sign_out(&session);
        assert_eq!(sessions.csrf_of(&session, now), None);
    }

    #[test]
    fn failed_sign_ins_are_counted_and_limited_per_client_then_for_all() {
        let sessions = sessions();
        let now = Instant::now();
        for _ in 0..PER_CLIENT {
            assert_eq!(
                sessions.sign_in("wrong", ip(1), now).unwrap(),
                SignIn::WrongKey
            );
        }
        assert!(
            matches!(
                sessions.sign_in(KEY, ip(1), now).unwrap(),
                SignIn::Limited(_)
            ),
            "even the right key waits"
        );
        assert!(
            matches!(
                sessions.sign_in(KEY, ip(2), now).unwrap(),
                SignIn::Admitted { .. }
            ),
            "another client is not limited by the first"
        );
        let later = now + WINDOW;
        assert!(
            matches!(
                sessions.sign_in(KEY, ip(1), later).unwrap(),
                SignIn::Admitted { .. }
            ),
            "the window passes"
        );
        for n in 0..IN_ALL {
            sessions
                .sign_in("wrong", ip(100 + n as u8 % 100), later)
                .unwrap();
        }
        assert!(matches!(
            sessions.sign_in(KEY, ip(3), later).unwrap(),
            SignIn::Limited(_)
        ));
        assert_eq!(sessions.failed_total(), (PER_CLIENT + IN_ALL) as u64);
    }
}
