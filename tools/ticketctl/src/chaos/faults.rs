//! The faults `ticketctl chaos` injects, drawn from its seed, and how long
//! each process was unavailable because of them.

use anyhow::Context as _;
use serde::Serialize;
use shared_events::Service;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::inspect::ServiceUrls;
use crate::load::fan::draw;
use crate::up::Cluster;

/// What a fault hits: one of the five services, or the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Service(Service),
    Broker,
}

impl Target {
    const ALL: [Target; 6] = [
        Target::Service(Service::Concert),
        Target::Service(Service::Queue),
        Target::Service(Service::Reservation),
        Target::Service(Service::MemberBalance),
        Target::Service(Service::Payment),
        Target::Broker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Service(service) => service.as_str(),
            Target::Broker => "broker",
        }
    }
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`; the supervisor starts it again as `up` does.
    Kill(Target),
    /// SIGSTOP, then SIGCONT after the pause: longer than the consumer
    /// session timeout, so its groups rebalance while work is in flight.
    Pause(Target, Duration),
    /// Every PostgreSQL connection of the service terminated
    /// (`pg_terminate_backend`) in the middle of its transactions.
    TerminateConnections(Service),
}

impl Fault {
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(..) => "pause",
            Fault::TerminateConnections(_) => "terminate_connections",
        }
    }

    pub fn target(self) -> Target {
        match self {
            Fault::Kill(target) | Fault::Pause(target, _) => target,
            Fault::TerminateConnections(service) => Target::Service(service),
        }
    }
}

/// The consumer session timeout the services run with (runtime's
/// `session.timeout.ms`): a pause must outlast it to cost a rebalance.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Draws the faults of a run from its seed: when the next comes and what
/// it is. Kills go through the six targets in a shuffled order, reshuffled
/// each round, so every target is hit in every six kills.
pub struct Schedule {
    seed: u64,
    draws: u64,
    mean_interval: Duration,
    postgres: bool,
    deck: Vec<Target>,
}

impl Schedule {
    pub fn new(seed: u64, mean_interval: Duration, postgres: bool) -> Schedule {
        Schedule {
            seed,
            draws: 0,
            mean_interval,
            postgres,
            deck: Vec::new(),
        }
    }

    fn draw(&mut self) -> f64 {
        self.draws += 1;
        draw(self.seed, self.draws)
    }

    /// The wait before the next fault: uniform from half to one and a half
    /// of the mean.
    pub fn next_wait(&mut self) -> Duration {
        self.mean_interval.mul_f64(0.5 + self.draw())
    }

    /// The next fault, never on a target in `busy` (paused now).
    pub fn next_fault(&mut self, busy: &[Target]) -> Fault {
        let kind = self.draw();
        if self.postgres && kind < 0.12 {
            let services: Vec<Service> = Service::ALL
                .into_iter()
                .filter(|s| !busy.contains(&Target::Service(*s)))
                .collect();
            if let Some(service) = self.pick(&services) {
                return Fault::TerminateConnections(service);
            }
        }
        if kind > 0.85 {
            let free: Vec<Target> = Target::ALL
                .into_iter()
                .filter(|t| !busy.contains(t))
                .collect();
            if let Some(target) = self.pick(&free) {
                let pause = SESSION_TIMEOUT + Duration::from_secs(2).mul_f64(1.0 + self.draw());
                return Fault::Pause(target, pause);
            }
        }
        Fault::Kill(self.next_kill(busy))
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        let at = (self.draw() * from.len() as f64) as usize;
        from.get(at.min(from.len().saturating_sub(1))).copied()
    }

    fn next_kill(&mut self, busy: &[Target]) -> Target {
        loop {
            // A paused target waits for a later turn in the deck.
            if let Some(at) = self.deck.iter().position(|t| !busy.contains(t)) {
                return self.deck.remove(at);
            }
            if Target::ALL.iter().all(|t| busy.contains(t)) {
                // Everything is paused: a kill of a stopped process is
                // still a kill (the injector forgets its pause).
                return Target::ALL[0];
            }
            // What is left of this round is paused: deal the next round.
            let mut deck = Target::ALL.to_vec();
            // Fisher–Yates with the run's draws.
            for i in (1..deck.len()).rev() {
                let j = ((self.draw() * (i + 1) as f64) as usize).min(i);
                deck.swap(i, j);
            }
            self.deck.extend(deck);
        }
    }
}

/// Injects faults into a cluster's processes.
pub struct Injector {
    /// PostgreSQL's server, when the services' databases are there, and
    /// the prefix of their database names.
    pub postgres: Option<(String, String)>,
    /// Paused processes: their pid and when they are woken.
    paused: Vec<(Target, u32, Instant)>,
    pub injected: BTreeMap<(&'static str, &'static str), u64>,
}

impl Injector {
    pub fn new(postgres: Option<(String, String)>) -> Injector {
        Injector {
            postgres,
            paused: Vec::new(),
            injected: BTreeMap::new(),
        }
    }

    pub fn paused(&self) -> Vec<Target> {
        self.paused.iter().map(|(t, _, _)| *t).collect()
    }

    /// Injects one fault; false when its target was not running (it is
    /// between a death and its restart), so nothing was done.
    pub fn inject(&mut self, cluster: &Cluster, fault: Fault) -> anyhow::Result<bool> {
        if let Fault::TerminateConnections(service) = fault {
            let terminated = self.terminate_connections(service)?;
            self.count(fault);
            return Ok(terminated > 0);
        }
        let target = fault.target();
        let Some(pid) = cluster
            .processes()
            .iter()
            .find(|p| p.name() == target.name())
            .and_then(|p| p.pid())
        else {
            return Ok(false);
        };
        let signal = match fault {
            Fault::Kill(_) => libc::SIGKILL,
            _ => libc::SIGSTOP,
        };
        // SAFETY: signalling a child of this process, by the pid its
        // supervisor holds (not yet reaped, so not reused).
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Ok(false);
        }
        match fault {
            Fault::Pause(_, pause) => self.paused.push((target, pid, Instant::now() + pause)),
            // Its pid is reaped and may be reused: never woken.
            _ => self.paused.retain(|(_, paused, _)| *paused != pid),
        }
        self.count(fault);
        Ok(true)
    }

    fn count(&mut self, fault: Fault) {
        *self
            .injected
            .entry((fault.kind(), fault.target().name()))
            .or_default() += 1;
    }

    /// Wakes the paused processes whose pause is over (all of them with
    /// `all`).
    pub fn wake(&mut self, all: bool) {
        let now = Instant::now();
        self.paused.retain(|(_, pid, until)| {
            if all || now >= *until {
                // SAFETY: waking a child this process stopped; a stopped
                // child cannot have exited, so the pid is still its own.
                unsafe {
                    libc::kill(*pid as i32, libc::SIGCONT);
                }
                false
            } else {
                true
            }
        });
    }

    /// Terminates every backend connected to the service's database.
    fn terminate_connections(&self, service: Service) -> anyhow::Result<usize> {
        use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
        let Some((server, prefix)) = &self.postgres else {
            return Ok(0);
        };
        #[derive(QueryableByName)]
        struct Terminated {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            terminated: i64,
        }
        let database = format!("{prefix}_{}", service.as_str().replace('-', "_"));
        let admin_url = format!("{server}/postgres");
        let mut admin = PgConnection::establish(&admin_url)
            .with_context(|| format!("cannot connect to {admin_url}"))?;
        let rows: Vec<Terminated> = diesel::sql_query(
            "SELECT count(pg_terminate_backend(pid)) AS terminated FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind::<diesel::sql_types::Text, _>(&database)
        .load(&mut admin)
        .with_context(|| format!("terminating the connections to {database}"))?;
        Ok(rows.first().map_or(0, |r| r.terminated as usize))
    }
}

/// How long each process was unavailable: a service while its
/// `/health/live` does not answer, the broker while its port refuses.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Outages {
    pub outages: u64,
    pub total_secs: f64,
    pub longest_secs: f64,
}

#[derive(Default)]
struct Probe {
    down_since: Option<Instant>,
    outages: Outages,
}

/// Probes every process five times a second until stopped.
#[derive(Clone)]
pub struct Availability {
    probes: Arc<Mutex<BTreeMap<&'static str, Probe>>>,
}

impl Availability {
    pub fn watch(
        urls: ServiceUrls,
        broker: Option<String>,
        stop: ticket_runtime::CancellationToken,
    ) -> anyhow::Result<Availability> {
        let availability = Availability {
            probes: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let watching = availability.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(200));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.is_cancelled() {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.cancelled() => break,
                }
                for service in Service::ALL {
                    let url = format!("{}/health/live", urls.url(service));
                    let up = http
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    watching.note(service.as_str(), up);
                }
                if let Some(address) = &broker {
                    let up = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(address),
                    )
                    .await
                    .is_ok_and(|connected| connected.is_ok());
                    watching.note("broker", up);
                }
            }
        });
        Ok(availability)
    }

    fn note(&self, name: &'static str, up: bool) {
        let Ok(mut probes) = self.probes.lock() else {
            return;
        };
        let probe = probes.entry(name).or_default();
        match (up, probe.down_since) {
            (false, None) => probe.down_since = Some(Instant::now()),
            (true, Some(since)) => {
                let down = since.elapsed().as_secs_f64();
                probe.down_since = None;
                probe.outages.outages += 1;
                probe.outages.total_secs += down;
                probe.outages.longest_secs = probe.outages.longest_secs.max(down);
            }
            _ => {}
        }
    }

    /// Each process's outages so far (one still going counts to now).
    pub fn outages(&self) -> BTreeMap<String, Outages> {
        let Ok(probes) = self.probes.lock() else {
            return BTreeMap::new();
        };
        probes
            .iter()
            .map(|(name, probe)| {
                let mut outages = probe.outages.clone();
                if let Some(since) = probe.down_since {
                    let down = since.elapsed().as_secs_f64();
                    outages.outages += 1;
                    outages.total_secs += down;
                    outages.longest_secs = outages.longest_secs.max(down);
                }
                (name.to_string(), outages)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults_and_kills_reach_every_target() {
        let faults = |seed| {
            let mut schedule = Schedule::new(seed, Duration::from_secs(10), true);
            (0..60)
                .map(|_| (schedule.next_wait(), schedule.next_fault(&[])))
                .collect::<Vec<_>>()
        };
        assert_eq!(faults(7), faults(7));
        assert_ne!(faults(7), faults(8));
        let mut schedule = Schedule::new(7, Duration::from_secs(10), false);
        let mut killed = std::collections::BTreeSet::new();
        for _ in 0..6 {
            killed.insert(schedule.next_kill(&[]).name());
        }
        assert_eq!(killed.len(), 6, "six kills hit all six targets");
    }

    #[test]
    fn a_pause_outlasts_the_session_timeout_and_spares_busy_targets() {
        let mut schedule = Schedule::new(3, Duration::from_secs(10), false);
        let busy = [Target::Broker, Target::Service(Service::Payment)];
        let mut pauses = 0;
        for _ in 0..500 {
            let fault = schedule.next_fault(&busy);
            assert!(!busy.contains(&fault.target()), "{fault:?}");
            assert!(
                !matches!(fault, Fault::TerminateConnections(_)),
                "no PostgreSQL, no connection faults"
            );
            if let Fault::Pause(_, pause) = fault {
                pauses += 1;
                assert!(pause > SESSION_TIMEOUT, "{pause:?}");
            }
        }
        assert!(pauses > 0);
    }
}
