//! Member tokens: who the fan calling is. A JWT from an identity provider
//! (any OpenID Connect provider, or `ticketctl`'s development issuer),
//! signed with EdDSA or RS256 and verified here against the provider's
//! public keys (a JWKS file or URL), with issuer, audience and expiry
//! checked. The fan is the token's `sub`, never an id the caller chose.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::SigningKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::http::ApiError;
use crate::pass::{decode_key, new_signing_key, sign_eddsa_jwt, KeyError};

/// The `[member_auth]` section of services that act for fans.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberAuthSettings {
    /// The `iss` every member token must carry.
    pub issuer: String,
    /// The `aud` every member token must carry (one of, when it is a list).
    pub audience: String,
    /// The provider's public keys: a JWKS file's path, an `http(s)://` URL,
    /// or the JWKS document itself (starting with `{`, for an environment
    /// variable).
    pub jwks: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// How often keys from a URL are fetched again (key rotation).
    pub jwks_refresh_secs: u64,
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
    #[error("the member token is from another issuer")]
    WrongIssuer,
    #[error("the member token is for another audience")]
    WrongAudience,
    #[error("the member token's subject is not a member id")]
    BadSubject,
}

impl MemberError {
    pub fn code(self) -> &'static str {
        match self {
            MemberError::Missing => "member_token_missing",
            MemberError::Malformed => "member_token_malformed",
            MemberError::UnsupportedAlgorithm => "member_token_algorithm",
            MemberError::Forged => "member_token_forged",
            MemberError::Expired => "member_token_expired",
            MemberError::WrongIssuer => "member_token_wrong_issuer",
            MemberError::WrongAudience => "member_token_wrong_audience",
            MemberError::BadSubject => "member_token_bad_subject",
        }
    }
}

impl From<MemberError> for ApiError {
    fn from(error: MemberError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string())
    }
}

/// The claims read from a member token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// The verified fan behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub user_id: Uuid,
}

/// The provider's keys, each with the algorithm it verifies.
type KeySet = Vec<(Option<String>, Algorithm, DecodingKey)>;

/// Verifies member tokens against the configured issuer's keys.
#[derive(Clone)]
pub struct MemberVerifier {
    settings: MemberAuthSettings,
    keys: Arc<RwLock<KeySet>>,
}

const ACCEPTED: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::RS256];

fn usable_keys(set: &JwkSet) -> KeySet {
    set.keys
        .iter()
        .filter_map(|jwk: &Jwk| {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((jwk.common.key_id.clone(), algorithm, key))
        })
        .collect()
}

impl MemberVerifier {
    /// Reads the keys once; a URL is fetched again by [`MemberVerifier::refresh_loop`].
    pub async fn load(settings: &MemberAuthSettings) -> Result<MemberVerifier, KeyError> {
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(KeyError(
                "APP__MEMBER_AUTH__ISSUER and APP__MEMBER_AUTH__AUDIENCE must be set".into(),
            ));
        }
        let keys = fetch_keys(&settings.jwks).await?;
        if keys.is_empty() {
            return Err(KeyError(format!(
                "the JWKS at {} has no EdDSA or RS256 key",
                settings.jwks
            )));
        }
        Ok(MemberVerifier {
            settings: settings.clone(),
            keys: Arc::new(RwLock::new(keys)),
        })
    }

    /// Fetches a JWKS URL again every `jwks_refresh_secs`, so that a key
    /// rotation at the provider is picked up; keeps the old keys on failure.
    pub async fn refresh_loop(self, stop: CancellationToken) {
        if !is_url(&self.settings.jwks) {
            return;
        }
        let every = Duration::from_secs(self.settings.jwks_refresh_secs.max(10));
        while crate::jobs::pause(&stop, every).await {
            match fetch_keys(&self.settings.jwks).await {
                Ok(keys) if !keys.is_empty() => match self.keys.write() {
                    Ok(mut current) => *current = keys,
                    Err(poisoned) => *poisoned.into_inner() = keys,
                },
                Ok(_) => {
                    tracing::warn!("the JWKS has no usable key any more; keeping the old ones")
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot refresh the JWKS; keeping the old keys")
                }
            }
        }
    }

    /// Checks form, algorithm, signature, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Member, MemberError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| MemberError::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(MemberError::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = self.settings.leeway_secs;
        let keys = match self.keys.read() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        let candidates = keys.iter().filter(|(kid, algorithm, _)| {
            *algorithm == header.alg
                && (header.kid.is_none() || header.kid.as_deref() == kid.as_deref())
        });
        let mut outcome = Err(MemberError::Forged);
        for (_, _, key) in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    outcome = Uuid::parse_str(&data.claims.sub)
                        .map(|user_id| Member { user_id })
                        .map_err(|_| MemberError::BadSubject);
                    break;
                }
                Err(error) => {
                    outcome = Err(match error.kind() {
                        ErrorKind::InvalidSignature => MemberError::Forged,
                        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                            MemberError::Expired
                        }
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

fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

async fn fetch_keys(source: &str) -> Result<KeySet, KeyError> {
    let text = if is_url(source) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
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
    } else if source.trim_start().starts_with('{') {
        source.to_string()
    } else if source.is_empty() {
        return Err(KeyError(
            "APP__MEMBER_AUTH__JWKS must name the identity provider's JWKS (a file or a URL); \
             `ticketctl up` sets its development issuer's"
                .into(),
        ));
    } else {
        // A small file read once at start (and on refresh): no need for tokio's fs.
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
    type Future = Ready<Result<Member, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(request))
    }
}

fn extract(request: &HttpRequest) -> Result<Member, ApiError> {
    let verifier = request
        .app_data::<web::Data<MemberVerifier>>()
        .ok_or_else(|| ApiError::unexpected(&KeyError("no member verifier configured".into())))?;
    let token = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or(MemberError::Missing)?;
    Ok(verifier.verify(token)?)
}

/// A development identity provider: an Ed25519 key that signs member
/// tokens for any user id, and the JWKS that verifies them. `ticketctl up`
/// keeps one per data folder; never use it where fans are real.
pub struct DevIssuer {
    key: SigningKey,
    pub key_id: String,
    pub issuer: String,
    pub audience: String,
}

#[derive(Serialize)]
struct DevClaims<'a> {
    sub: String,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The issuer and audience of the development issuer's tokens.
pub const DEV_ISSUER: &str = "ticketctl-dev";
pub const DEV_AUDIENCE: &str = "ticketing";

impl DevIssuer {
    pub fn generate() -> Result<DevIssuer, KeyError> {
        Ok(DevIssuer::with_key(new_signing_key()?))
    }

    /// The issuer whose private key is `private_key` (base64, 32 bytes).
    pub fn from_base64(private_key: &str) -> Result<DevIssuer, KeyError> {
        Ok(DevIssuer::with_key(SigningKey::from_bytes(&decode_key(
            private_key,
        )?)))
    }

    fn with_key(key: SigningKey) -> DevIssuer {
        let public = key.verifying_key().to_bytes();
        DevIssuer {
            key_id: URL_SAFE_NO_PAD.encode(&public[..8]),
            key,
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
        }
    }

    pub fn private_key_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    /// The JWKS that verifies this issuer's tokens.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "use": "sig",
                "alg": "EdDSA",
                "kid": self.key_id,
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
            }]
        })
    }

    /// A member token for `user_id`, valid for `ttl`.
    pub fn token(&self, user_id: Uuid, ttl: chrono::TimeDelta) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.key_id });
        sign_eddsa_jwt(
            &self.key,
            &header.to_string(),
            &DevClaims {
                sub: user_id.to_string(),
                iss: &self.issuer,
                aud: &self.audience,
                iat: now,
                exp: now + ttl.num_seconds(),
            },
        )
    }

    /// Settings that make a service trust this issuer, its JWKS in `jwks_path`.
    pub fn settings(&self, jwks_path: &str) -> MemberAuthSettings {
        MemberAuthSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            jwks: jwks_path.into(),
            leeway_secs: 30,
            jwks_refresh_secs: 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(verifier.verify(&token), Ok(Member { user_id: fan }));
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
            assert_eq!(extract(&request).ok(), Some(Member { user_id: fan }));
        }
        let basic = actix_web::test::TestRequest::default()
            .app_data(verifier)
            .insert_header((actix_web::http::header::AUTHORIZATION, "Basic abc"))
            .to_http_request();
        assert!(
            extract(&basic).is_err(),
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
            verifier.verify(&stranger.token(fan, TimeDelta::minutes(5))),
            Err(MemberError::Forged),
            "another key, even with the same issuer name"
        );
        // The same key id as the real issuer's does not help a forger.
        let mut impostor = DevIssuer::generate().unwrap();
        impostor.key_id = issuer.key_id.clone();
        assert_eq!(
            verifier.verify(&impostor.token(fan, TimeDelta::minutes(5))),
            Err(MemberError::Forged)
        );
        assert_eq!(
            verifier.verify(&issuer.token(fan, TimeDelta::seconds(-5))),
            Err(MemberError::Expired)
        );
        let mut elsewhere = DevIssuer::from_base64(&issuer.private_key_base64()).unwrap();
        elsewhere.issuer = "https://evil.example".into();
        assert_eq!(
            verifier.verify(&elsewhere.token(fan, TimeDelta::minutes(5))),
            Err(MemberError::WrongIssuer)
        );
        let mut other_app = DevIssuer::from_base64(&issuer.private_key_base64()).unwrap();
        other_app.audience = "another-app".into();
        assert_eq!(
            verifier.verify(&other_app.token(fan, TimeDelta::minutes(5))),
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
            verifier.verify(&unsigned),
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
            verifier.verify(&confused),
            Err(MemberError::UnsupportedAlgorithm)
        );
        for garbage in ["", "a.b", "a.b.c", &genuine.replace('.', "")] {
            assert_eq!(
                verifier.verify(garbage),
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
        assert_eq!(verifier.verify(&token), Err(MemberError::BadSubject));
    }

    #[tokio::test]
    async fn rs256_tokens_of_a_provider_verify_against_its_jwks() {
        let jwks: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/rs256-test-jwks.json")).unwrap();
        let verifier = verifier_for(&jwks, "https://id.example").await;
        let key = EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/rs256-test-key.pem"))
            .unwrap();
        let fan = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rs256-test".into());
        let claims = |iss: &str, exp: i64| serde_json::json!({"sub": fan, "iss": iss, "aud": DEV_AUDIENCE, "iat": now, "exp": exp});
        let token = encode(&header, &claims("https://id.example", now + 300), &key).unwrap();
        assert_eq!(verifier.verify(&token), Ok(Member { user_id: fan }));
        let expired = encode(&header, &claims("https://id.example", now - 300), &key).unwrap();
        assert_eq!(verifier.verify(&expired), Err(MemberError::Expired));
        let foreign = encode(&header, &claims("https://other.example", now + 300), &key).unwrap();
        assert_eq!(verifier.verify(&foreign), Err(MemberError::WrongIssuer));
    }
}
