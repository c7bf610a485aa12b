//! The system's invariants (docs/saga.md), checked once the cluster is
//! idle by `ticketctl audit` (the built binary, through every service's
//! admin listings), and the rows some scenarios look at directly.

use diesel::prelude::*;
use diesel::sql_types::Text;
use serde_json::Value;
use shared_events::Service;
use std::time::Duration;
use ticket_runtime::DbError;

use super::Cluster;

#[derive(QueryableByName)]
struct ReservationRow {
    #[diesel(sql_type = Text)]
    id: String,
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

impl Cluster {
    /// The invariants that must hold once the cluster is idle: `ticketctl
    /// audit` waits for it to settle and finds no violation.
    pub async fn assert_invariants(&self) {
        let report = self.audit().await;
        assert_eq!(
            report["violations"],
            Value::Array(Vec::new()),
            "audit found violations: {report:#}"
        );
        assert_eq!(report["settled"], true, "{report:#}");
    }

    /// `ticketctl audit --json`: its report, whether it passed or not.
    pub async fn audit(&self) -> Value {
        let (code, out) = self
            .ticketctl(&["audit", "--json", "--settle-timeout", "60s"])
            .await;
        let report: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        let passed = report["violations"].as_array().is_some_and(Vec::is_empty);
        assert_eq!(code == 0, passed, "exit code {code} for {report:#}");
        report
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

    /// The id of every reservation, oldest first.
    pub async fn reservations(&self) -> Vec<String> {
        let rows: Vec<ReservationRow> = self
            .rows(
                Service::Reservation,
                "SELECT id FROM reservations ORDER BY created_at",
            )
            .await;
        rows.into_iter().map(|r| r.id).collect()
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
