//! An instance's own wall clock, for the times it stamps on what it
//! creates. Whether a lease or a hold ran out is decided on the database's
//! clock instead ([`crate::db::database_now`]): every instance of a
//! service shares that one, while their own clocks drift apart.

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    ahead: TimeDelta,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock `ahead` of the system's (behind it when negative): an
    /// instance whose clock is off, for tests.
    #[cfg(any(test, feature = "testkit"))]
    pub fn off_by(ahead: TimeDelta) -> Clock {
        Clock { ahead }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.ahead
    }
}
