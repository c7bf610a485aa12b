//! Development only: the embedded broker's launcher ([`broker`]), the
//! development identity provider ([`issuer`]), key pairs ([`keys`]) and the
//! test kit. No production path of the runtime imports this room; a layer
//! test (`cargo test -p layers`) keeps it so.

pub mod broker;
pub mod issuer;
pub mod keys;
#[cfg(feature = "testkit")]
pub mod testkit;
