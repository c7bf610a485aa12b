//! Prometheus metrics every service exposes on `/metrics`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Consumed events by outcome: applied, duplicate, ignored, dead_lettered.
    pub events_consumed: IntCounterVec,
    pub handler_duration: HistogramVec,
    pub outbox_published: IntCounter,
    pub outbox_failures: IntCounter,
    pub outbox_pending: IntGauge,
    /// Age of the oldest event not yet acknowledged by the broker (0 when none).
    pub outbox_oldest_age: Gauge,
    /// Producers replaced after a fatal error.
    pub producer_restarts: IntCounter,
    /// Messages the consumer has not yet committed, per partition it reads.
    pub consumer_lag: IntGaugeVec,
    /// Messages sent to a dead-letter topic, by the topic they came from.
    pub dead_letters: IntCounterVec,
    /// Saga endings published by this service, by outcome and reason.
    pub saga_outcomes: IntCounterVec,
}

impl Metrics {
    #[expect(
        clippy::expect_used,
        reason = "metric names, labels and buckets are constants: a bad one fails every test"
    )]
    pub fn new(service: &str) -> Metrics {
        let registry = Registry::new_custom(
            None,
            Some([("service".to_string(), service.to_string())].into()),
        )
        .expect("static labels are valid");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["method", "route"],
        )
        .expect("valid metric");
        let events_consumed = IntCounterVec::new(
            Opts::new(
                "events_consumed_total",
                "Consumed events by type and outcome",
            ),
            &["consumer", "event_type", "outcome"],
        )
        .expect("valid metric");
        let handler_duration = HistogramVec::new(
            HistogramOpts::new("event_handler_duration_seconds", "Event handling latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            &["consumer"],
        )
        .expect("valid metric");
        let outbox_published = IntCounter::new(
            "outbox_published_total",
            "Events acknowledged by the broker",
        )
        .expect("valid metric");
        let outbox_failures = IntCounter::new(
            "outbox_publish_failures_total",
            "Events the broker did not acknowledge (retried)",
        )
        .expect("valid metric");
        let outbox_pending =
            IntGauge::new("outbox_pending", "Events waiting in the outbox").expect("valid metric");
        let outbox_oldest_age = Gauge::new(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest event waiting in the outbox (0 when it is empty)",
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_lag",
                "Messages not yet committed by the consumer, per assigned partition",
            ),
            &["consumer", "topic", "partition"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "dead_letters_total",
                "Messages sent to a dead-letter topic, by their origin topic",
            ),
            &["consumer", "topic"],
        )
        .expect("valid metric");
        let saga_outcomes = IntCounterVec::new(
            Opts::new(
                "saga_outcomes_total",
                "Saga endings this service published: completed or a compensation, with its reason",
            ),
            &["outcome", "reason"],
        )
        .expect("valid metric");
        let producer_restarts = IntCounter::new(
            "kafka_producer_restarts_total",
            "Producers replaced after a fatal error",
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn Collector>,
            Box::new(http_duration.clone()),
            Box::new(events_consumed.clone()),
            Box::new(handler_duration.clone()),
            Box::new(outbox_published.clone()),
            Box::new(outbox_failures.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(producer_restarts.clone()),
            Box::new(outbox_oldest_age.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(dead_letters.clone()),
            Box::new(saga_outcomes.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            events_consumed,
            handler_duration,
            outbox_published,
            outbox_failures,
            outbox_pending,
            producer_restarts,
            outbox_oldest_age,
            consumer_lag,
            dead_letters,
            saga_outcomes,
        }
    }

    /// Adds a service's own metric (exported with the shared ones).
    pub fn register(&self, collector: impl Collector + 'static) -> prometheus::Result<()> {
        self.registry.register(Box::new(collector))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
