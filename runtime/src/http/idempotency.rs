//! A client's `Idempotency-Key`: a retried request with the same key gets
//! the first answer. The same rule and header in every service.

use actix_web::HttpRequest;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("Idempotency-Key must be 1 to 128 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl TryFrom<&str> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;

    fn try_from(value: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(IdempotencyKey(value.to_string()))
    }
}

impl IdempotencyKey {
    /// The request's key, if it sent one.
    pub fn of(request: &HttpRequest) -> Result<Option<IdempotencyKey>, InvalidIdempotencyKey> {
        match request.headers().get(IDEMPOTENCY_KEY) {
            Some(value) => {
                let text = value.to_str().map_err(|_| InvalidIdempotencyKey)?;
                IdempotencyKey::try_from(text).map(Some)
            }
            None => Ok(None),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(IdempotencyKey::try_from("order-42").is_ok());
        for bad in ["", "with space", "é", &"k".repeat(129)] {
            assert!(IdempotencyKey::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_key_that_is_not_text_is_invalid() {
        let request = actix_web::test::TestRequest::default()
            .insert_header((IDEMPOTENCY_KEY, &b"\xff\xfe"[..]))
            .to_http_request();
        assert_eq!(IdempotencyKey::of(&request), Err(InvalidIdempotencyKey));
        let none = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(IdempotencyKey::of(&none), Ok(None));
    }
}
