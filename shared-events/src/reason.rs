//! Why a saga step said no, or why something ended: the codes that travel
//! in events from one service to another. One enum for all of them, because
//! a reason crosses several hops (a hold's rejection becomes the
//! reservation's, a confirmation's becomes the payment's failure and the
//! refund's reason).
//!
//! On the wire a reason is its name (`"SEAT_TAKEN"`). A name this version
//! does not know — a newer producer's — is kept as [`Reason::Other`], so
//! adding a reason stays a compatible change (docs/events.md).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)+
            /// A reason this version does not know, as it was sent.
            Other(String),
        }

        impl Reason {
            /// Every reason this version knows.
            pub const KNOWN: &'static [Reason] = &[$(Reason::$variant,)+];

            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$variant => $name,)+
                    Reason::Other(name) => name,
                }
            }
        }

        impl From<&str> for Reason {
            fn from(name: &str) -> Reason {
                match name {
                    $($name => Reason::$variant,)+
                    other => Reason::Other(other.to_owned()),
                }
            }
        }
    };
}

reasons! {
    // Concert: a seat could not be held or sold.
    /// The schedule a reservation names does not exist.
    ScheduleNotFound = "SCHEDULE_NOT_FOUND",
    /// The schedule belongs to another concert than the pass's.
    WrongConcert = "WRONG_CONCERT",
    /// No such seat on the schedule.
    SeatNotFound = "SEAT_NOT_FOUND",
    /// Another reservation holds or bought the seat.
    SeatTaken = "SEAT_TAKEN",
    /// The seat is not held by the reservation (any more).
    NotHeld = "NOT_HELD",
    // Reservation: why a reservation ended or a debit did not confirm it.
    /// The fan cancelled it.
    CancelledByUser = "CANCELLED_BY_USER",
    /// The concert service did not answer the request in time.
    HoldTimedOut = "HOLD_TIMED_OUT",
    /// The hold ran out before it was paid.
    HoldExpired = "HOLD_EXPIRED",
    /// The debit was not the hold's price.
    AmountMismatch = "AMOUNT_MISMATCH",
    /// The payer is not the fan who holds the seat.
    NotOwner = "NOT_OWNER",
    /// Its payment failed.
    PaymentFailed = "PAYMENT_FAILED",
    /// The concert service could not sell the confirmed seat.
    SeatNotSold = "SEAT_NOT_SOLD",
    // Member-balance.
    /// The wallet holds less than the price.
    InsufficientBalance = "INSUFFICIENT_BALANCE",
    // Payment.
    /// The saga took longer than the payment deadline.
    SagaTimedOut = "SAGA_TIMED_OUT",
    /// The debit was given back before any other reason was heard.
    Refunded = "REFUNDED",
    // Queue.
    /// The fan's payment completed: their place goes to the next fan.
    PaymentCompleted = "PAYMENT_COMPLETED",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Reason, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Reason::from(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_as_their_names_and_unknown_ones_survive() {
        for reason in Reason::KNOWN {
            let json = serde_json::to_string(reason).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(
                serde_json::from_str::<Reason>(&json).ok().as_ref(),
                Some(reason)
            );
        }
        let newer: Reason = serde_json::from_str("\"SEAT_ON_FIRE\"").unwrap_or(Reason::NotHeld);
        assert_eq!(newer, Reason::Other("SEAT_ON_FIRE".into()));
        assert_eq!(
            serde_json::to_string(&newer).ok().as_deref(),
            Some("\"SEAT_ON_FIRE\"")
        );
    }
}
