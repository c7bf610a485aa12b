//! Prometheus metrics every service exposes on `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Consumed events by outcome: applied, duplicate, ignored, unknown_type, dead_lettered.
    pub events_consumed: IntCounterVec,
    pub handler_duration: HistogramVec,
    pub outbox_published: IntCounter,
    pub outbox_failures: IntCounter,
    pub outbox_pending: IntGauge,
    /// Producers replaced after a fatal error.
    pub producer_restarts: IntCounter,
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
        let producer_restarts = IntCounter::new(
            "kafka_producer_restarts_total",
            "Producers replaced after a fatal error",
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(events_consumed.clone()),
            Box::new(handler_duration.clone()),
            Box::new(outbox_published.clone()),
            Box::new(outbox_failures.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(producer_restarts.clone()),
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
        }
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
