//! Member tokens: who the fan calling is. A JWT from an identity provider
//! (any OpenID Connect provider, or `ticketctl`'s development issuer),
//! signed with EdDSA or RS256 and verified here against the provider's
//! public keys (a JWKS file or https URL), with issuer, audience, expiry
//! and not-before checked. The fan is the token's `sub`, never an id the
//! caller chose.
//!
//! The keys are fetched again every `jwks_refresh_secs`, and at once (at
//! most every `jwks_refetch_min_secs`) for a token whose key id is not in
//! the set, so a rotation at the provider is picked up. Keys that could not
//! be fetched again for `jwks_max_age_secs` are no longer trusted: a key
//! the provider withdrew must not stay valid just because the provider is
//! out of reach.
//!
//! A fan polling their place sends the same token many times a second
//! across a rush, and checking its signature is most of what such a request
//! costs. So the last `verified_cache_entries` tokens that verified are
//! remembered, by their exact text, with the member they name: until the
//! token's `exp` (the leeway is not extended to them), and only while the
//! keys that verified them are the current ones (any fetch of the keys
//! forgets them all) and not too old. Only successes are remembered; a
//! remembered token is never logged (it is a credential).

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::keys::KeyError;
use crate::http::{ApiError, IntoApiError};

/// The `[member_auth]` section of services that act for fans.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberAuthSettings {
    /// The `iss` every member token must carry.
    pub issuer: String,
    /// The `aud` every member token must carry (one of, when it is a list).
    pub audience: String,
    /// The provider's public keys: a JWKS file's path, an `https://` URL,
    /// or the JWKS document itself (starting with `{`, for an environment
    /// variable). Plain `http://` is refused: anyone on the path could
    /// swap the keys.
    pub jwks: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// How often the keys are fetched again (key rotation); at least 10.
    pub jwks_refresh_secs: u64,
    /// How long keys stay trusted after the last fetch that succeeded;
    /// more than `jwks_refresh_secs`, so that a few refreshes may fail.
    pub jwks_max_age_secs: u64,
    /// The least time between two fetches, when a token names a key id
    /// the set does not have (or the keys are too old): a flood of made-up
    /// key ids must not become a flood of requests to the provider.
    pub jwks_refetch_min_secs: u64,
    /// How many verified tokens are remembered (0: none), so that a fan
    /// who sends the same token again is not verified again.
    pub verified_cache_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("an Authorization: Bearer <member token> header is required")]
    Missing,
    #[error("the member token is not a well-formed JWT")]
    Malformed,
    #[error("member tokens must be signed with EdDSA or RS256")]
    UnsupportedAlgorithm,
    #[error("no configured key verifies the member token")]
    Forged,
    #[error("the member token has expired")]
    Expired,
    #[error("the member token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("the member token is from another issuer")]
    WrongIssuer,
    #[error("the member token is for another audience")]
    WrongAudience,
    #[error("the member token's subject is not a member id")]
    BadSubject,
    /// The provider's keys could not be fetched for longer than
    /// `jwks_max_age_secs`. A 401 like the others (every fan endpoint
    /// documents `member_token_*` as 401), with its own code so that a
    /// client or an operator can tell it from a bad token.
    #[error(
        "the identity provider's keys could not be fetched for too long; \
         member tokens cannot be verified until they are"
    )]
    KeysStale,
}

impl MemberError {
    pub fn code(self) -> &'static str {
        match self {
            MemberError::Missing => "member_token_missing",
            MemberError::Malformed => "member_token_malformed",
            MemberError::UnsupportedAlgorithm => "member_token_algorithm",
            MemberError::Forged => "member_token_forged",
            MemberError::Expired => "member_token_expired",
            MemberError::NotYetValid => "member_token_not_yet_valid",
            MemberError::WrongIssuer => "member_token_wrong_issuer",
            MemberError::WrongAudience => "member_token_wrong_audience",
            MemberError::BadSubject => "member_token_bad_subject",
            MemberError::KeysStale => "member_token_keys_stale",
        }
    }
}

impl IntoApiError for MemberError {
    fn api_error(&self) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, self.code(), self.to_string())
    }
}

/// The claims read from a member token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Seconds since the epoch (a JSON number; the validation has checked it).
    exp: f64,
}

/// The verified fan behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub user_id: Uuid,
}

/// One of the provider's keys, with the one algorithm it verifies.
struct ProviderKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The provider's keys as last fetched.
struct KeySet {
    keys: Vec<ProviderKey>,
    fetched_at: Instant,
    /// Which fetch this is: tokens verified with another one's keys are
    /// not taken from the cache.
    generation: u64,
}

/// Tokens that verified with the keys of one fetch, and whom they name.
#[derive(Default)]
struct Verified {
    generation: u64,
    /// By the token's exact text: the member and the token's `exp`.
    tokens: HashMap<String, (Member, i64)>,
}

/// Verifies member tokens against the configured issuer's keys.
#[derive(Clone)]
pub struct MemberVerifier {
    settings: MemberAuthSettings,
    keys: Arc<RwLock<KeySet>>,
    /// When the keys were last fetched, or tried; held during a fetch, so
    /// that requests with the same unknown key id wait for one fetch
    /// instead of each making their own.
    last_attempt: Arc<tokio::sync::Mutex<Instant>>,
    verified: Arc<Mutex<Verified>>,
}

const ACCEPTED: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::RS256];

/// The keys of `set` that verify signatures of an accepted algorithm. A key
/// the provider published for another use (`use` other than `sig`) or for
/// another algorithm (`alg`) is left out (RFC 7517 4.2, 4.4): it was never
/// meant to vouch for a member token.
fn usable_keys(set: &JwkSet) -> Vec<ProviderKey> {
    set.keys
        .iter()
        .filter_map(|jwk: &Jwk| {
            let (algorithm, published_as) = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => (Algorithm::EdDSA, KeyAlgorithm::EdDSA),
                AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
                _ => return None,
            };
            let for_signatures = jwk
                .common
                .public_key_use
                .as_ref()
                .is_none_or(|usage| *usage == PublicKeyUse::Signature);
            let for_algorithm = jwk
                .common
                .key_algorithm
                .is_none_or(|alg| alg == published_as);
            if !(for_signatures && for_algorithm) {
                return None;
            }
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some(ProviderKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            })
        })
        .collect()
}

fn refresh_interval(settings: &MemberAuthSettings) -> Duration {
    Duration::from_secs(settings.jwks_refresh_secs.max(10))
}

impl MemberVerifier {
    /// Reads the keys once; [`MemberVerifier::refresh_loop`] reads them again.
    pub async fn load(settings: &MemberAuthSettings) -> Result<MemberVerifier, KeyError> {
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(KeyError(
                "APP__MEMBER_AUTH__ISSUER and APP__MEMBER_AUTH__AUDIENCE must be set".into(),
            ));
        }
        if settings.jwks_max_age_secs <= refresh_interval(settings).as_secs() {
            return Err(KeyError(format!(
                "member_auth.jwks_max_age_secs ({}) must be longer than the refresh interval \
                 ({} s), or the keys would expire between two refreshes",
                settings.jwks_max_age_secs,
                refresh_interval(settings).as_secs()
            )));
        }
        let keys = fetch_keys(&settings.jwks).await?;
        if keys.is_empty() {
            return Err(KeyError(format!(
                "the JWKS at {} has no EdDSA or RS256 signing key",
                settings.jwks
            )));
        }
        let now = Instant::now();
        Ok(MemberVerifier {
            settings: settings.clone(),
            keys: Arc::new(RwLock::new(KeySet {
                keys,
                fetched_at: now,
                generation: 0,
            })),
            last_attempt: Arc::new(tokio::sync::Mutex::new(now)),
            verified: Arc::default(),
        })
    }

    /// Fetches the keys again every `jwks_refresh_secs`, so that a key
    /// rotation at the provider is picked up.
    pub async fn refresh_loop(self, stop: CancellationToken) {
        let every = refresh_interval(&self.settings);
        while crate::ops::jobs::pause(&stop, every).await {
            self.fetch_again(Duration::ZERO).await;
        }
    }

    /// Fetches the keys unless that was tried within `unless_tried_within`.
    /// A set with a usable key replaces the current one; on failure the
    /// current keys are kept, and trusted until `jwks_max_age_secs` after
    /// the last fetch that succeeded.
    async fn fetch_again(&self, unless_tried_within: Duration) {
        let mut last_attempt = self.last_attempt.lock().await;
        if last_attempt.elapsed() < unless_tried_within {
            return;
        }
        *last_attempt = Instant::now();
        match fetch_keys(&self.settings.jwks).await {
            Ok(keys) if !keys.is_empty() => {
                let mut current = self.write_keys();
                *current = KeySet {
                    keys,
                    fetched_at: Instant::now(),
                    generation: current.generation + 1,
                };
                return;
            }
            Ok(_) => tracing::warn!("the JWKS has no usable key any more; keeping the old ones"),
            Err(error) => tracing::warn!(%error, "cannot refresh the JWKS; keeping the old keys"),
        }
        if self.read_keys().fetched_at.elapsed() > self.max_age() {
            tracing::error!(
                max_age_secs = self.settings.jwks_max_age_secs,
                "the JWKS could not be fetched for longer than its max age: \
                 every member token is refused (member_token_keys_stale) until it is"
            );
        }
    }

    fn max_age(&self) -> Duration {
        Duration::from_secs(self.settings.jwks_max_age_secs)
    }

    fn read_keys(&self) -> RwLockReadGuard<'_, KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_keys(&self) -> RwLockWriteGuard<'_, KeySet> {
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn verified(&self) -> MutexGuard<'_, Verified> {
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The member of a token that verified with the current keys, before
    /// its `exp`, while those keys are not too old.
    fn remembered(&self, token: &str) -> Option<Member> {
        if self.settings.verified_cache_entries == 0 {
            return None;
        }
        let generation = {
            let keys = self.read_keys();
            if keys.fetched_at.elapsed() > self.max_age() {
                return None;
            }
            keys.generation
        };
        let verified = self.verified();
        if verified.generation != generation {
            return None;
        }
        let (member, exp) = verified.tokens.get(token)?;
        (chrono::Utc::now().timestamp() < *exp).then_some(*member)
    }

    fn remember(&self, token: &str, member: Member, exp: i64, generation: u64) {
        let capacity = self.settings.verified_cache_entries;
        if capacity == 0 {
            return;
        }
        let mut verified = self.verified();
        if verified.generation != generation {
            verified.tokens.clear();
            verified.generation = generation;
        }
        if verified.tokens.len() >= capacity {
            let now = chrono::Utc::now().timestamp();
            verified.tokens.retain(|_, (_, exp)| now < *exp);
            if verified.tokens.len() >= capacity {
                verified.tokens.clear();
            }
        }
        verified.tokens.insert(token.to_owned(), (member, exp));
    }

    /// Checks form, algorithm, signature, issuer, audience, expiry and
    /// not-before, against keys no older than `jwks_max_age_secs`; a token
    /// that verified a moment ago is taken from the cache of verified ones.
    pub async fn verify(&self, token: &str) -> Result<Member, MemberError> {
        if let Some(member) = self.remembered(token) {
            return Ok(member);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| MemberError::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(MemberError::UnsupportedAlgorithm);
        }
        // A key id the set lacks may be a key the provider rotated in since
        // the last fetch; keys too old may be fetchable again by now.
        let refetch = {
            let keys = self.read_keys();
            let unknown_kid = header
                .kid
                .as_deref()
                .is_some_and(|kid| !keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
            unknown_kid || keys.fetched_at.elapsed() > self.max_age()
        };
        if refetch {
            self.fetch_again(Duration::from_secs(self.settings.jwks_refetch_min_secs))
                .await;
        }
        self.verify_with_current_keys(token, &header)
    }

    fn verify_with_current_keys(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Member, MemberError> {
        let keys = self.read_keys();
        if keys.fetched_at.elapsed() > self.max_age() {
            return Err(MemberError::KeysStale);
        }
        let generation = keys.generation;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway_secs;
        let candidates = keys.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && (header.kid.is_none() || header.kid.as_deref() == k.kid.as_deref())
        });
        let mut outcome = Err(MemberError::Forged);
        for ProviderKey { key, .. } in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    outcome = Uuid::parse_str(&data.claims.sub)
                        .map(|user_id| Member { user_id })
                        .map_err(|_| MemberError::BadSubject);
                    if let Ok(member) = outcome {
                        // Whole seconds below `exp`: never past it.
                        let exp = data.claims.exp.floor() as i64;
                        self.remember(token, member, exp, generation);
                    }
                    break;
                }
                Err(error) => {
                    outcome = Err(match error.kind() {
                        ErrorKind::InvalidSignature => MemberError::Forged,
                        ErrorKind::ExpiredSignature => MemberError::Expired,
                        ErrorKind::ImmatureSignature => MemberError::NotYetValid,
                        ErrorKind::InvalidIssuer => MemberError::WrongIssuer,
                        ErrorKind::InvalidAudience => MemberError::WrongAudience,
                        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => {
                            MemberError::BadSubject
                        }
                        _ => MemberError::Malformed,
                    });
                    // Only a signature that did not verify makes another key worth a try.
                    if outcome != Err(MemberError::Forged) {
                        break;
                    }
                }
            }
        }
        outcome
    }
}

async fn fetch_keys(source: &str) -> Result<Vec<ProviderKey>, KeyError> {
    let text = if source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // Not even a redirect may downgrade the fetch to plain http.
            .https_only(true)
            .build()
            .map_err(|e| KeyError(e.to_string()))?;
        let response = client
            .get(source)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| KeyError(format!("cannot fetch the JWKS at {source}: {e}")))?;
        response
            .text()
            .await
            .map_err(|e| KeyError(format!("cannot read the JWKS at {source}: {e}")))?
    } else if source.starts_with("http://") {
        return Err(KeyError(format!(
            "the JWKS at {source} must be fetched over https (or read from a file): \
             over plain http anyone on the path could swap the keys"
        )));
    } else if source.trim_start().starts_with('{') {
        source.to_string()
    } else if source.is_empty() {
        return Err(KeyError(
            "APP__MEMBER_AUTH__JWKS must name the identity provider's JWKS (a file or a URL); \
             `ticketctl up` sets its development issuer's"
                .into(),
        ));
    } else {
        // A small file read at start and on refresh: no need for tokio's fs.
        std::fs::read_to_string(source)
            .map_err(|e| KeyError(format!("cannot read the JWKS file {source}: {e}")))?
    };
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| KeyError(format!("the configured JWKS is not a JWKS: {e}")))?;
    Ok(usable_keys(&set))
}

/// Extracts and verifies `Authorization: Bearer <member token>`; needs a
/// `web::Data<MemberVerifier>` in the app.
impl FromRequest for Member {
    type Error = ApiError;
    // Not `Ready`: a token with an unknown key id may wait for a fetch of the keys.
    type Future = LocalBoxFuture<'static, Result<Member, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verifier = request.app_data::<web::Data<MemberVerifier>>().cloned();
        let token = bearer_token(request).map(str::to_owned);
        Box::pin(async move {
            let verifier = verifier.ok_or_else(|| {
                ApiError::unexpected(&KeyError("no member verifier configured".into()))
            })?;
            Ok(verifier.verify(&token?).await?)
        })
    }
}

fn bearer_token(request: &HttpRequest) -> Result<&str, MemberError> {
    request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or(MemberError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::sign_eddsa_jwt;
    use crate::dev::issuer::{DevIssuer, DEV_AUDIENCE, DEV_ISSUER};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::TimeDelta;
    use jsonwebtoken::{encode, EncodingKey, Header};

    async fn verifier_for(jwks: &serde_json::Value, issuer: &str) -> MemberVerifier {
        let path = std::env::temp_dir().join(format!("jwks-{}.json", Uuid::new_v4()));
        std::fs::write(&path, jwks.to_string()).unwrap();
        let settings = MemberAuthSettings {
            issuer: issuer.into(),
            audience: DEV_AUDIENCE.into(),
            jwks: path.display().to_string(),
            leeway_secs: 0,
            jwks_refresh_secs: 300,
            jwks_max_age_secs: 3600,
            jwks_refetch_min_secs: 30,
            verified_cache_entries: 100,
        };
        let verifier = MemberVerifier::load(&settings).await.unwrap();
        std::fs::remove_file(path).unwrap();
        verifier
    }

    #[tokio::test]
    async fn the_member_is_the_subject_of_a_token_the_issuer_signed() {
        let issuer = DevIssuer::generate().unwrap();
        let verifier = verifier_for(&issuer.jwks(), DEV_ISSUER).await;
        let fan = Uuid::new_v4();
        let token = issuer.token(fan, TimeDelta::minutes(5));
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_read_in_any_case() {
        let issuer = DevIssuer::generate().unwrap();
        let verifier = web::Data::new(verifier_for(&issuer.jwks(), DEV_ISSUER).await);
        let fan = Uuid::new_v4();
        let token = issuer.token(fan, TimeDelta::minutes(5));
        for header in [format!("Bearer {token}"), format!("bearer {token}")] {
            let request = actix_web::test::TestRequest::default()
                .app_data(verifier.clone())
                .insert_header((actix_web::http::header::AUTHORIZATION, header))
                .to_http_request();
            assert_eq!(
                Member::extract(&request).await.ok(),
                Some(Member { user_id: fan })
            );
        }
        let basic = actix_web::test::TestRequest::default()
            .app_data(verifier)
            .insert_header((actix_web::http::header::AUTHORIZATION, "Basic abc"))
            .to_http_request();
        assert!(
            Member::extract(&basic).await.is_err(),
            "another scheme is no member token"
        );
    }

    #[tokio::test]
    async fn forged_expired_foreign_and_unsigned_tokens_are_refused() {
        let issuer = DevIssuer::generate().unwrap();
        let verifier = verifier_for(&issuer.jwks(), DEV_ISSUER).await;
        let fan = Uuid::new_v4();

        let stranger = DevIssuer::generate().unwrap();
        assert_eq!(
            verifier
                .verify(&stranger.token(fan, TimeDelta::minutes(5)))
                .await,
            Err(MemberError::Forged),
            "another key, even with the same issuer name"
        );
        // The same key id as the real issuer's does not help a forger.
        let mut impostor = DevIssuer::generate().unwrap();
        impostor.key_id = issuer.key_id.clone();
        assert_eq!(
            verifier
                .verify(&impostor.token(fan, TimeDelta::minutes(5)))
                .await,
            Err(MemberError::Forged)
        );
        assert_eq!(
            verifier
                .verify(&issuer.token(fan, TimeDelta::seconds(-5)))
                .await,
            Err(MemberError::Expired)
        );
        let mut elsewhere = DevIssuer::from_base64(&issuer.private_key_base64()).unwrap();
        elsewhere.issuer = "https://evil.example".into();
        assert_eq!(
            verifier
                .verify(&elsewhere.token(fan, TimeDelta::minutes(5)))
                .await,
            Err(MemberError::WrongIssuer)
        );
        let mut other_app = DevIssuer::from_base64(&issuer.private_key_base64()).unwrap();
        other_app.audience = "another-app".into();
        assert_eq!(
            verifier
                .verify(&other_app.token(fan, TimeDelta::minutes(5)))
                .await,
            Err(MemberError::WrongAudience)
        );

        // alg: none, with the genuine claims and no signature.
        let genuine = issuer.token(fan, TimeDelta::minutes(5));
        let claims = genuine.split('.').nth(1).unwrap();
        let unsigned = format!(
            "{}.{claims}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        );
        assert!(matches!(
            verifier.verify(&unsigned).await,
            Err(MemberError::Malformed | MemberError::UnsupportedAlgorithm)
        ));
        // HS256 signed with the public key as the secret (algorithm confusion).
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": fan, "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(issuer.jwks()["keys"][0]["x"].as_str().unwrap().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&confused).await,
            Err(MemberError::UnsupportedAlgorithm)
        );
        for garbage in ["", "a.b", "a.b.c", &genuine.replace('.', "")] {
            assert_eq!(
                verifier.verify(garbage).await,
                Err(MemberError::Malformed),
                "{garbage}"
            );
        }
        let token = {
            let now = chrono::Utc::now().timestamp();
            let header = serde_json::json!({ "alg": "EdDSA", "kid": issuer.key_id });
            sign_eddsa_jwt(
                &issuer.key,
                &header.to_string(),
                &serde_json::json!({"sub": "admin", "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "exp": now + 60}),
            )
        };
        assert_eq!(verifier.verify(&token).await, Err(MemberError::BadSubject));
    }

    #[tokio::test]
    async fn rs256_tokens_of_a_provider_verify_against_its_jwks() {
        let jwks: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/rs256-test-jwks.json"))
                .unwrap();
        let verifier = verifier_for(&jwks, "https://id.example").await;
        let key =
            EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/rs256-test-key.pem"))
                .unwrap();
        let fan = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rs256-test".into());
        let claims = |iss: &str, exp: i64| serde_json::json!({"sub": fan, "iss": iss, "aud": DEV_AUDIENCE, "iat": now, "exp": exp});
        let token = encode(&header, &claims("https://id.example", now + 300), &key).unwrap();
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
        let expired = encode(&header, &claims("https://id.example", now - 300), &key).unwrap();
        assert_eq!(verifier.verify(&expired).await, Err(MemberError::Expired));
        let foreign = encode(&header, &claims("https://other.example", now + 300), &key).unwrap();
        assert_eq!(
            verifier.verify(&foreign).await,
            Err(MemberError::WrongIssuer)
        );
    }

    #[tokio::test]
    async fn a_token_is_refused_before_its_nbf_give_or_take_the_leeway() {
        let issuer = DevIssuer::generate().unwrap();
        let fan = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let from = |nbf: i64| {
            let header = serde_json::json!({ "alg": "EdDSA", "kid": issuer.key_id });
            sign_eddsa_jwt(
                &issuer.key,
                &header.to_string(),
                &serde_json::json!({"sub": fan, "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "nbf": nbf, "exp": now + 600}),
            )
        };
        let strict = verifier_for(&issuer.jwks(), DEV_ISSUER).await;
        assert_eq!(
            strict.verify(&from(now + 300)).await,
            Err(MemberError::NotYetValid)
        );
        assert_eq!(
            strict.verify(&from(now - 5)).await,
            Ok(Member { user_id: fan })
        );

        // The leeway that forgives a slow clock on exp forgives it on nbf too.
        let path = std::env::temp_dir().join(format!("jwks-{}.json", Uuid::new_v4()));
        std::fs::write(&path, issuer.jwks().to_string()).unwrap();
        let lenient = MemberVerifier::load(&issuer.settings(&path.display().to_string()))
            .await
            .unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(
            lenient.verify(&from(now + 10)).await,
            Ok(Member { user_id: fan })
        );
        assert_eq!(
            lenient.verify(&from(now + 300)).await,
            Err(MemberError::NotYetValid)
        );
    }

    #[tokio::test]
    async fn a_key_meant_for_another_use_or_algorithm_verifies_nothing() {
        let issuer = DevIssuer::generate().unwrap();
        // Another key in the set, so that the set itself is usable.
        let bystander = DevIssuer::generate().unwrap().jwks()["keys"][0].clone();
        let fan = Uuid::new_v4();
        let token = issuer.token(fan, TimeDelta::minutes(5));
        for (field, value) in [("use", "enc"), ("alg", "ES256"), ("alg", "RSA-OAEP")] {
            let mut key = issuer.jwks()["keys"][0].clone();
            key[field] = value.into();
            let jwks = serde_json::json!({ "keys": [key, bystander] });
            let verifier = verifier_for(&jwks, DEV_ISSUER).await;
            assert_eq!(
                verifier.verify(&token).await,
                Err(MemberError::Forged),
                "{field}: {value}"
            );
        }
        // An RSA key published for RS384 does not verify RS256 tokens.
        let mut jwks: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/rs256-test-jwks.json"))
                .unwrap();
        jwks["keys"][0]["alg"] = "RS384".into();
        jwks["keys"].as_array_mut().unwrap().push(bystander.clone());
        let verifier = verifier_for(&jwks, "https://id.example").await;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rs256-test".into());
        let now = chrono::Utc::now().timestamp();
        let rs256 = encode(
            &header,
            &serde_json::json!({"sub": fan, "iss": "https://id.example", "aud": DEV_AUDIENCE, "exp": now + 300}),
            &EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/rs256-test-key.pem")).unwrap(),
        )
        .unwrap();
        assert_eq!(verifier.verify(&rs256).await, Err(MemberError::Forged));

        // Neither `use` nor `alg` is required: a key without them is used.
        let mut bare = issuer.jwks()["keys"][0].clone();
        bare.as_object_mut().unwrap().remove("use");
        bare.as_object_mut().unwrap().remove("alg");
        let verifier = verifier_for(&serde_json::json!({ "keys": [bare] }), DEV_ISSUER).await;
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
    }

    /// Answers every request on 127.0.0.1 with `body`, over plain http;
    /// returns the URL and how many connections it took.
    fn serve_over_plain_http(body: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, connections)
    }

    #[tokio::test]
    async fn a_jwks_url_over_plain_http_is_refused_without_being_fetched() {
        let issuer = DevIssuer::generate().unwrap();
        let (url, connections) = serve_over_plain_http(issuer.jwks().to_string());
        let Err(error) = MemberVerifier::load(&issuer.settings(&url)).await else {
            panic!("keys fetched over plain http were trusted: anyone on the path could swap them");
        };
        assert!(error.to_string().contains("https"), "{error}");
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "refused before any request"
        );
    }

    /// Writes `jwks` to a file of its own, as a provider that can be
    /// changed (rotation) or taken away (an outage); its path.
    fn provider_file(jwks: &serde_json::Value) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("jwks-{}.json", Uuid::new_v4()));
        std::fs::write(&path, jwks.to_string()).unwrap();
        path
    }

    impl MemberVerifier {
        /// Moves the last fetch of the keys, and the last attempt, `by` into
        /// the past, as if that much time had gone by since.
        async fn age(&self, by: Duration) {
            {
                let mut keys = self.write_keys();
                keys.fetched_at = keys.fetched_at.checked_sub(by).unwrap();
            }
            let mut last_attempt = self.last_attempt.lock().await;
            *last_attempt = last_attempt.checked_sub(by).unwrap();
        }
    }

    #[tokio::test]
    async fn keys_that_cannot_be_fetched_again_expire_after_their_max_age() {
        let issuer = DevIssuer::generate().unwrap();
        let path = provider_file(&issuer.jwks());
        let mut settings = issuer.settings(&path.display().to_string());
        settings.jwks_refresh_secs = 10;
        settings.jwks_max_age_secs = 20;
        let verifier = MemberVerifier::load(&settings).await.unwrap();
        let fan = Uuid::new_v4();
        let token = issuer.token(fan, TimeDelta::minutes(5));

        // The provider is out of reach: a refresh fails and the keys are kept...
        std::fs::remove_file(&path).unwrap();
        verifier.age(Duration::from_secs(11)).await;
        verifier.fetch_again(Duration::ZERO).await;
        assert_eq!(
            verifier.verify(&token).await,
            Ok(Member { user_id: fan }),
            "a refresh that fails keeps the keys for a while"
        );
        // ... but not for ever: the provider may have withdrawn one of them.
        verifier.age(Duration::from_secs(10)).await;
        assert_eq!(verifier.verify(&token).await, Err(MemberError::KeysStale));
        assert_eq!(
            ApiError::from(MemberError::KeysStale).status,
            StatusCode::UNAUTHORIZED
        );

        // Back within reach, the keys are fetched on the next token (once
        // the last attempt is older than jwks_refetch_min_secs) and trusted again.
        std::fs::write(&path, issuer.jwks().to_string()).unwrap();
        verifier.age(Duration::from_secs(31)).await;
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn a_remembered_token_outlives_neither_its_exp_nor_the_keys_that_verified_it() {
        let issuer = DevIssuer::generate().unwrap();
        let path = provider_file(&issuer.jwks());
        let mut settings = issuer.settings(&path.display().to_string());
        settings.leeway_secs = 0;
        let verifier = MemberVerifier::load(&settings).await.unwrap();
        let fan = Uuid::new_v4();

        let token = issuer.token(fan, TimeDelta::minutes(5));
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
        assert_eq!(
            verifier.remembered(&token),
            Some(Member { user_id: fan }),
            "a verified token is remembered"
        );
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
        // One character of the signature changed.
        let at = token.len() - 10;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        let altered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        assert_eq!(verifier.remembered(&altered), None, "only the exact text");
        assert_eq!(verifier.verify(&altered).await, Err(MemberError::Forged));

        // The provider withdraws the key: the next fetch forgets the token.
        let other = DevIssuer::generate().unwrap();
        std::fs::write(&path, other.jwks().to_string()).unwrap();
        verifier.fetch_again(Duration::ZERO).await;
        assert_eq!(verifier.remembered(&token), None);
        assert_eq!(verifier.verify(&token).await, Err(MemberError::Forged));

        // A token is remembered until its exp, not after.
        let brief = other.token(fan, TimeDelta::seconds(1));
        assert_eq!(verifier.verify(&brief).await, Ok(Member { user_id: fan }));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(verifier.remembered(&brief), None);
        assert_eq!(verifier.verify(&brief).await, Err(MemberError::Expired));

        // Keys too old: a remembered token is refused like any other.
        let fresh = other.token(fan, TimeDelta::minutes(5));
        assert_eq!(verifier.verify(&fresh).await, Ok(Member { user_id: fan }));
        std::fs::remove_file(&path).unwrap();
        verifier.age(Duration::from_secs(3601)).await;
        assert_eq!(verifier.verify(&fresh).await, Err(MemberError::KeysStale));
    }

    #[tokio::test]
    async fn an_unknown_key_id_fetches_the_keys_again_at_most_every_refetch_interval() {
        let old = DevIssuer::generate().unwrap();
        let path = provider_file(&old.jwks());
        let verifier = MemberVerifier::load(&old.settings(&path.display().to_string()))
            .await
            .unwrap();
        let fan = Uuid::new_v4();
        let key_of = |issuer: &DevIssuer| issuer.jwks()["keys"][0].clone();

        // The provider rotates a new key in and signs with it at once.
        let new = DevIssuer::generate().unwrap();
        std::fs::write(
            &path,
            serde_json::json!({ "keys": [key_of(&old), key_of(&new)] }).to_string(),
        )
        .unwrap();
        let token = new.token(fan, TimeDelta::minutes(5));
        assert_eq!(
            verifier.verify(&token).await,
            Err(MemberError::Forged),
            "the keys were fetched (at start) less than jwks_refetch_min_secs ago"
        );
        verifier.age(Duration::from_secs(31)).await;
        assert_eq!(
            verifier.verify(&token).await,
            Ok(Member { user_id: fan }),
            "the unknown key id fetched the keys again, long before the next refresh"
        );

        // The fetch just made holds off the next one, whatever the key id.
        let newer = DevIssuer::generate().unwrap();
        std::fs::write(
            &path,
            serde_json::json!({ "keys": [key_of(&new), key_of(&newer)] }).to_string(),
        )
        .unwrap();
        let token = newer.token(fan, TimeDelta::minutes(5));
        assert_eq!(verifier.verify(&token).await, Err(MemberError::Forged));
        verifier.age(Duration::from_secs(31)).await;
        assert_eq!(verifier.verify(&token).await, Ok(Member { user_id: fan }));
        assert_eq!(
            verifier
                .verify(&old.token(fan, TimeDelta::minutes(5)))
                .await,
            Err(MemberError::Forged),
            "the key the provider withdrew is gone"
        );
        std::fs::remove_file(path).unwrap();
    }
}
