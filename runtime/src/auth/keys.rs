//! Ed25519 keys and the compact EdDSA JWS that both token kinds use: the
//! queue's passes and the development issuer's member tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("invalid key: {0}")]
pub struct KeyError(pub String);

pub(crate) fn key_bytes(encoded: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|e| KeyError(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| KeyError("expected 32 bytes, base64-encoded".into()))
}

/// A new Ed25519 signing key from the OS's randomness.
pub fn new_signing_key() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError(format!("no randomness: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn decode_key(encoded: &str) -> Result<[u8; 32], KeyError> {
    key_bytes(encoded)
}

/// A compact EdDSA JWS of `claims` under `header` (JSON). Hand-written
/// because it is three base64 parts and one Ed25519 signature: nothing a
/// JWT library would make simpler, and the key type stays ed25519-dalek's.
pub fn sign_eddsa_jwt(key: &SigningKey, header: &str, claims: &impl Serialize) -> String {
    #[expect(
        clippy::expect_used,
        reason = "claims are plain structs of strings and numbers: serializing them cannot fail"
    )]
    let claims = serde_json::to_vec(claims).expect("claims serialize");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}
