//! ticketctl's integration tests in one binary: the sagas end to end, the
//! races between instances, the waiting line, `ticketctl up` as a user runs
//! it, a short `ticketctl load`, and the deployment files. One link and one broker for all of them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

mod chaos;
mod console;
mod deploy;
mod inspect;
mod load;
mod queue;
mod races;
mod saga;
mod support;
mod up;
