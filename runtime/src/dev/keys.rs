//! Key pairs for passes, made by `ticketctl secrets` and `up`, and by tests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::keys::new_signing_key;

/// A new key pair as (private, public), both base64.
pub fn generate_key_pair() -> (String, String) {
    #[expect(
        clippy::expect_used,
        reason = "without the OS's randomness no key can be made (secrets, up, tests)"
    )]
    let key = new_signing_key().expect("the OS provides randomness");
    (
        STANDARD.encode(key.to_bytes()),
        STANDARD.encode(key.verifying_key().to_bytes()),
    )
}
