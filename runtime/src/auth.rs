//! Who is calling: a fan's member token from an identity provider
//! ([`member`]), the queue's signed access pass ([`pass`]), and the Ed25519
//! keys and compact JWS both use ([`keys`]). The admin key is the HTTP
//! room's (`http::admin`).

pub mod keys;
pub mod member;
pub mod pass;
