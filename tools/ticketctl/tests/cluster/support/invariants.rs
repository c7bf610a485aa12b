//! The system's invariants (docs/saga.md), checked from each service's own
//! tables once the cluster is idle.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use shared_events::Service;
use std::collections::HashMap;
use std::time::Duration;
use ticket_runtime::testkit::eventually;
use ticket_runtime::DbError;

use super::{Cluster, WAIT};

#[derive(QueryableByName)]
pub struct ReservationRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub schedule_id: String,
    #[diesel(sql_type = Integer)]
    pub seat_no: i32,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub payment_id: Option<String>,
}

#[derive(QueryableByName)]
struct PaymentRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    reservation_id: String,
    #[diesel(sql_type = Text)]
    status: String,
}

#[derive(QueryableByName)]
struct SeatRow {
    #[diesel(sql_type = Text)]
    schedule_id: String,
    #[diesel(sql_type = Integer)]
    seat_no: i32,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    reservation_id: Option<String>,
}

#[derive(QueryableByName)]
struct WalletRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

#[derive(QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    amount: i64,
}

#[derive(QueryableByName)]
struct DebitRow {
    #[diesel(sql_type = Text)]
    payment_id: String,
    #[diesel(sql_type = Text)]
    reservation_id: String,
}

impl Cluster {
    /// The invariants that must hold once the cluster is idle.
    pub async fn assert_invariants(&self) {
        eventually(
            WAIT,
            "every outbox to drain and every saga to end",
            || async {
                for service in Service::ALL {
                    if self.outbox_pending(service).await > 0 {
                        return None;
                    }
                }
                let reservations = self.reservations().await;
                let payments = self.payments().await;
                let settled = reservations.iter().all(|r| r.status != "PENDING")
                    && payments.iter().all(|(_, _, status)| status != "PENDING");
                settled.then_some(())
            },
        )
        .await;
        // Give consumers a moment to apply what the relays just sent, then check.
        self.settle().await;

        let reservations = self.reservations().await;
        let payments = self.payments().await;
        let seats: Vec<SeatRow> = self
            .rows(
                Service::Concert,
                "SELECT schedule_id, seat_no, status, reservation_id FROM seats",
            )
            .await;
        let seat_of = |schedule: &str, seat_no: i32| {
            let seat = seats
                .iter()
                .find(|s| s.schedule_id == schedule && s.seat_no == seat_no)
                .expect("seat exists");
            (seat.status.clone(), seat.reservation_id.clone())
        };

        // No seat is HELD or SOLD for two reservations, and every live hold
        // or confirmation owns its seat.
        let mut claims: HashMap<(String, i32), Vec<&str>> = HashMap::new();
        for r in reservations
            .iter()
            .filter(|r| r.status == "HELD" || r.status == "CONFIRMED")
        {
            claims
                .entry((r.schedule_id.clone(), r.seat_no))
                .or_default()
                .push(&r.id);
            let (status, holder) = seat_of(&r.schedule_id, r.seat_no);
            let expected = if r.status == "HELD" { "HELD" } else { "SOLD" };
            assert_eq!(
                (status.as_str(), holder.as_deref()),
                (expected, Some(r.id.as_str())),
                "seat of {}",
                r.id
            );
        }
        for (seat, holders) in &claims {
            assert_eq!(holders.len(), 1, "seat {seat:?} claimed by {holders:?}");
        }
        for seat in &seats {
            let (schedule, seat_no, status, holder) = (
                &seat.schedule_id,
                &seat.seat_no,
                &seat.status,
                &seat.reservation_id,
            );
            if status != "AVAILABLE" {
                let holder = holder.as_deref().expect("a taken seat has a holder");
                assert!(
                    claims
                        .get(&(schedule.clone(), *seat_no))
                        .is_some_and(|h| h == &vec![holder]),
                    "seat {schedule}/{seat_no} is {status} for {holder}, which does not hold it"
                );
            }
        }

        // Every member: balance = charges - debits + refunds >= 0.
        let wallets: Vec<WalletRow> = self
            .rows(
                Service::MemberBalance,
                "SELECT user_id, balance FROM wallets",
            )
            .await;
        let ledger: Vec<LedgerRow> = self
            .rows(
                Service::MemberBalance,
                "SELECT user_id, kind, amount FROM ledger_entries",
            )
            .await;
        for wallet in wallets {
            let sum: i64 = ledger
                .iter()
                .filter(|e| e.user_id == wallet.user_id)
                .map(|e| {
                    if e.kind == "PAYMENT_DEBIT" {
                        -e.amount
                    } else {
                        e.amount
                    }
                })
                .sum();
            let (user, balance) = (wallet.user_id, wallet.balance);
            assert!(balance >= 0, "{user} is negative");
            assert_eq!(balance, sum, "{user}'s balance is the sum of the ledger");
        }

        // Every COMPLETED payment has one CONFIRMED reservation and one SOLD seat.
        for (payment, reservation, status) in &payments {
            if status == "COMPLETED" {
                let confirmed: Vec<_> = reservations
                    .iter()
                    .filter(|r| {
                        r.status == "CONFIRMED" && r.payment_id.as_deref() == Some(payment.as_str())
                    })
                    .collect();
                assert_eq!(confirmed.len(), 1, "payment {payment}");
                assert_eq!(&confirmed[0].id, reservation);
                let (seat, holder) = seat_of(&confirmed[0].schedule_id, confirmed[0].seat_no);
                assert_eq!(
                    (seat.as_str(), holder.as_deref()),
                    ("SOLD", Some(reservation.as_str()))
                );
            }
        }
        // Every debit whose reservation was not confirmed by it is refunded.
        let unrefunded: Vec<DebitRow> = self
            .rows(
                Service::MemberBalance,
                "SELECT payment_id, reservation_id FROM payment_debits \
                 WHERE refund_entry_id IS NULL",
            )
            .await;
        for DebitRow {
            payment_id: payment,
            reservation_id: reservation,
        } in unrefunded
        {
            let confirmed = reservations.iter().any(|r| {
                r.id == reservation
                    && r.status == "CONFIRMED"
                    && r.payment_id.as_deref() == Some(payment.as_str())
            });
            assert!(
                confirmed,
                "debit of payment {payment} kept without a confirmed reservation"
            );
        }
    }

    /// Waits until no consumer has applied anything for a short while.
    pub async fn settle(&self) {
        let mut last = Vec::new();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let snapshot = self.consumption().await;
            if snapshot != last {
                last = snapshot;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() > Duration::from_millis(700) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn reservations(&self) -> Vec<ReservationRow> {
        self.rows(
            Service::Reservation,
            "SELECT id, schedule_id, seat_no, status, payment_id FROM reservations \
             ORDER BY created_at",
        )
        .await
    }

    /// (id, reservation, status) of every payment.
    pub async fn payments(&self) -> Vec<(String, String, String)> {
        let rows: Vec<PaymentRow> = self
            .rows(
                Service::Payment,
                "SELECT id, reservation_id, status FROM payments ORDER BY id",
            )
            .await;
        rows.into_iter()
            .map(|p| (p.id, p.reservation_id, p.status))
            .collect()
    }

    /// Rows of one service's own database, read as the service's tables
    /// stand: test-only reads stay out of the services' stores.
    async fn rows<T>(&self, service: Service, sql: &'static str) -> Vec<T>
    where
        T: QueryableByName<ticket_runtime::db::MultiBackend> + Send + 'static,
    {
        self.db(service)
            .run(move |conn| {
                diesel::sql_query(sql)
                    .load::<T>(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap()
    }
}
