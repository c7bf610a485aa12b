//! What the payment service tells the data platform (`POST
//! /v1/reservations`, outside the event bus): one record per completed
//! reservation. Here because both sides need it, the payment service and
//! the stand-in `ticketctl up` runs, and a service may not depend on a tool.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A completed reservation: paid, confirmed and its seat sold. The
/// platform takes one per `payment_id` (a repeat delivery is a duplicate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedReservation {
    pub payment_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub concert_id: Uuid,
    pub schedule_id: Uuid,
    pub seat_no: u32,
    pub amount: i64,
    pub completed_at: DateTime<Utc>,
}
