//! Access passes: JWTs signed with Ed25519 (`alg: EdDSA`) by the queue
//! service, verified locally by every other service with the public key, so
//! that no request needs a call to the queue service.
//!
//! Hand-written on `ed25519-dalek` rather than through `jsonwebtoken` (which
//! the member tokens use): a pass has exactly one form, so the check is a
//! byte comparison of the header with the one we sign, one signature check
//! and our own claims type — no algorithm list, no key lookup, nothing a
//! crafted header could steer (no `alg` confusion by construction), in
//! fewer lines than the configuration a general JWT library needs for it.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};
use uuid::Uuid;

use super::keys::{key_bytes, sign_eddsa_jwt, KeyError};
use crate::http::ApiError;

const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

/// What a pass says: who, for which concert, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassClaims {
    /// The fan's user id.
    pub sub: Uuid,
    pub concert_id: Uuid,
    /// The queue token the pass was issued for.
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
}

impl PassClaims {
    pub fn user_id(&self) -> Uuid {
        self.sub
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("a Queue-Pass header with the pass from the waiting line is required")]
    Missing,
    #[error("the pass is not a well-formed EdDSA JWT")]
    Malformed,
    #[error("the pass signature does not verify")]
    Forged,
    #[error("the pass has expired")]
    Expired,
    #[error("the pass is for another concert")]
    WrongConcert,
    #[error("the pass has ended")]
    Ended,
    #[error("the pass was issued to another member")]
    NotYours,
}

impl PassError {
    pub fn code(self) -> &'static str {
        match self {
            PassError::Missing => "pass_missing",
            PassError::Malformed => "pass_malformed",
            PassError::Forged => "pass_forged",
            PassError::Expired => "pass_expired",
            PassError::WrongConcert => "pass_wrong_concert",
            PassError::Ended => "pass_ended",
            PassError::NotYours => "pass_not_yours",
        }
    }
}

impl From<PassError> for ApiError {
    fn from(error: PassError) -> ApiError {
        // A valid pass of another member: the caller is known, and refused.
        let status = if error == PassError::NotYours {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

/// The header that carries the pass; `Authorization` carries the member token.
pub const PASS_HEADER: &str = "queue-pass";

pub struct PassSigner {
    key: SigningKey,
}

impl PassSigner {
    pub fn from_base64(private_key: &str) -> Result<PassSigner, KeyError> {
        Ok(PassSigner {
            key: SigningKey::from_bytes(&key_bytes(private_key)?),
        })
    }

    pub fn sign(&self, claims: &PassClaims) -> String {
        sign_eddsa_jwt(&self.key, HEADER, claims)
    }
}

#[derive(Clone)]
pub struct PassVerifier {
    key: VerifyingKey,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
}

impl PassVerifier {
    pub fn from_base64(public_key: &str) -> Result<PassVerifier, KeyError> {
        let key = VerifyingKey::from_bytes(&key_bytes(public_key)?)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(PassVerifier { key })
    }

    /// Checks form, signature and expiry (in that order).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<PassClaims, PassError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PassError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| PassError::Malformed)
        };
        let header: JoseHeader =
            serde_json::from_slice(&decode(header)?).map_err(|_| PassError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(PassError::Malformed);
        }
        let signature_bytes: [u8; 64] = decode(signature)?
            .try_into()
            .map_err(|_| PassError::Malformed)?;
        let signing_input = &token[..token.len() - signature.len() - 1];
        self.key
            .verify(
                signing_input.as_bytes(),
                &Signature::from_bytes(&signature_bytes),
            )
            .map_err(|_| PassError::Forged)?;
        let claims: PassClaims =
            serde_json::from_slice(&decode(claims)?).map_err(|_| PassError::Malformed)?;
        if claims.exp <= now.timestamp() {
            return Err(PassError::Expired);
        }
        Ok(claims)
    }
}

/// Extracts and verifies the `Queue-Pass` header; needs a
/// `web::Data<PassVerifier>` in the app. Which concert it must be for, and
/// that it is the calling member's, are the handler's checks.
#[derive(Debug, Clone)]
pub struct Pass(pub PassClaims);

impl FromRequest for Pass {
    type Error = ApiError;
    type Future = Ready<Result<Pass, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(request))
    }
}

fn extract(request: &HttpRequest) -> Result<Pass, ApiError> {
    let verifier = request
        .app_data::<web::Data<PassVerifier>>()
        .ok_or_else(|| ApiError::unexpected(&KeyError("no pass verifier configured".into())))?;
    let token = request
        .headers()
        .get(PASS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(PassError::Missing)?;
    Ok(Pass(verifier.verify(token, Utc::now())?))
}

impl Pass {
    /// The pass must be the calling member's own.
    pub fn of(self, member: &crate::auth::member::Member) -> Result<Pass, PassError> {
        if self.0.sub == member.user_id {
            Ok(self)
        } else {
            Err(PassError::NotYours)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::keys::generate_key_pair;
    use base64::engine::general_purpose::STANDARD;

    fn claims(exp_in: i64) -> PassClaims {
        let now = Utc::now().timestamp();
        PassClaims {
            sub: Uuid::now_v7(),
            concert_id: Uuid::now_v7(),
            jti: Uuid::now_v7(),
            iat: now,
            exp: now + exp_in,
        }
    }

    #[test]
    fn a_signed_pass_verifies_with_the_public_key() {
        let (private, public) = generate_key_pair();
        let signer = PassSigner::from_base64(&private).unwrap();
        let issued = claims(600);
        let token = signer.sign(&issued);
        let verified = PassVerifier::from_base64(&public)
            .unwrap()
            .verify(&token, Utc::now());
        assert_eq!(verified, Ok(issued));
    }

    #[test]
    fn forged_expired_and_malformed_passes_are_told_apart() {
        let (private, public) = generate_key_pair();
        let (other_private, _) = generate_key_pair();
        let verifier = PassVerifier::from_base64(&public).unwrap();
        let signer = PassSigner::from_base64(&private).unwrap();
        let forger = PassSigner::from_base64(&other_private).unwrap();

        let forged = forger.sign(&claims(600));
        assert_eq!(verifier.verify(&forged, Utc::now()), Err(PassError::Forged));

        let genuine = signer.sign(&claims(600));
        let (head, _) = genuine.rsplit_once('.').unwrap();
        let (header, _) = head.split_once('.').unwrap();
        let mut raised = claims(600);
        raised.exp += 86_400;
        let tampered = format!(
            "{header}.{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&raised).unwrap()),
            genuine.rsplit_once('.').unwrap().1
        );
        assert_eq!(
            verifier.verify(&tampered, Utc::now()),
            Err(PassError::Forged)
        );

        let expired = signer.sign(&claims(-1));
        assert_eq!(
            verifier.verify(&expired, Utc::now()),
            Err(PassError::Expired)
        );

        for garbage in ["", "a.b", "a.b.c.d", "x.y.z", &genuine.replace('.', "")] {
            assert_eq!(
                verifier.verify(garbage, Utc::now()),
                Err(PassError::Malformed),
                "{garbage}"
            );
        }
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(600)).unwrap())
        );
        assert_eq!(
            verifier.verify(&none_alg, Utc::now()),
            Err(PassError::Malformed)
        );
    }

    #[test]
    fn keys_must_be_32_base64_bytes() {
        assert!(PassSigner::from_base64("not base64!").is_err());
        assert!(PassVerifier::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }
}

/// The `[auth]` section of services that accept passes.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub pass_public_key: String,
}

impl AuthSettings {
    pub fn verifier(&self) -> Result<PassVerifier, KeyError> {
        PassVerifier::from_base64(&self.pass_public_key).map_err(|e| {
            KeyError(format!(
                "{}; set APP__AUTH__PASS_PUBLIC_KEY (`ticketctl up` or `ticketctl secrets DIR` makes a pair)",
                e.0
            ))
        })
    }
}
