//! The development identity provider of `ticketctl up` and the tests.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::keys::{decode_key, new_signing_key, sign_eddsa_jwt, KeyError};
use crate::auth::member::MemberAuthSettings;

/// A development identity provider: an Ed25519 key that signs member
/// tokens for any user id, and the JWKS that verifies them. `ticketctl up`
/// keeps one per data folder; never use it where fans are real.
pub struct DevIssuer {
    // Tests of the verifier sign tokens the issuer itself never makes.
    pub(crate) key: SigningKey,
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
            jwks_max_age_secs: 3600,
            jwks_refetch_min_secs: 30,
            verified_cache_entries: 100,
        }
    }
}
