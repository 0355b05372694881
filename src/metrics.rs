//! Every Prometheus metric, in one registry that each part of the daemon reports to. The
//! names are a contract (docs/architecture.md §7). Label values are bounded: endpoints are
//! route templates, sources and connectors come from the config, never an item id.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub source: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub connector: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// Delivery latency buckets, in seconds: from a webhook on loopback (milliseconds) to a
/// delivery that waited out a connector outage (hours).
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 21600.0,
];

/// The daemon's metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub api_requests: Family<ApiRequestLabels, Counter>,
    pub api_rate_limit_remaining: Gauge,
    pub api_throttled: Counter,
    pub poll_runs: Family<PollLabels, Counter>,
    pub last_success: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    /// 1 while a source has not completed a run for longer than its schedule allows.
    pub source_stale: Family<SourceLabels, Gauge>,
    /// 1 on the instance that polls a source now, 0 on the others.
    pub source_leader: Family<SourceLabels, Gauge>,
    /// Instances sharing the state database with a fresh heartbeat (1 on SQLite).
    pub instances: Gauge,
    /// 1 while the state database records, 0 while it cannot be reached or written.
    pub state_up: Gauge,
    pub events: Family<TypeLabel, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_queue_depth: Family<ConnectorLabels, Gauge>,
    /// Seconds the oldest pending delivery of each connector has waited (0: none).
    pub delivery_oldest_pending: Family<ConnectorLabels, Gauge>,
    pub delivery_latency: Family<ConnectorLabels, Histogram>,
    pub meeting_uploads: Family<OutcomeLabels, Counter>,
    /// Drop folders taking nothing because processed/ or failed/ cannot be used.
    pub meeting_folders_blocked: Gauge,
    pub items_skipped: Family<SourceLabels, Counter>,
    pub build_info: Family<VersionLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clairo_sync");
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests made to the Clairo API, by endpoint and HTTP status (or error kind)",
            api_requests.clone(),
        );
        let api_rate_limit_remaining = Gauge::default();
        registry.register(
            "api_rate_limit_remaining",
            "X-RateLimit-Remaining as last reported by the Clairo API",
            api_rate_limit_remaining.clone(),
        );
        let api_throttled = Counter::default();
        registry.register(
            "api_throttled",
            "429 Too Many Requests answers received from the Clairo API",
            api_throttled.clone(),
        );
        let poll_runs = Family::<PollLabels, Counter>::default();
        registry.register(
            "poll_runs",
            "Poll runs by source and outcome (success, failure)",
            poll_runs.clone(),
        );
        let last_success = Family::<SourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run of each source",
            last_success.clone(),
        );
        let source_stale = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "source_stale",
            "1 while a source has not completed a run for longer than its schedule allows (/readyz says since when)",
            source_stale.clone(),
        );
        let source_leader = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "source_leader",
            "1 on the instance that polls a source now (holds its lease), 0 on the others",
            source_leader.clone(),
        );
        let instances = Gauge::default();
        registry.register(
            "instances",
            "Instances sharing the state database whose heartbeat is younger than state.lease",
            instances.clone(),
        );
        let state_up = Gauge::default();
        registry.register(
            "state_up",
            "1 while the state database records; 0 while it cannot be reached or does not take writes (PostgreSQL; /readyz says why)",
            state_up.clone(),
        );
        let events = Family::<TypeLabel, Counter>::default();
        registry.register("events", "Events recorded, by type", events.clone());
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by connector and outcome (delivered, retry, dead)",
            deliveries.clone(),
        );
        let delivery_queue_depth = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "delivery_queue_depth",
            "Deliveries waiting to be sent, by connector",
            delivery_queue_depth.clone(),
        );
        let delivery_oldest_pending = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "delivery_oldest_pending_seconds",
            "Age of the oldest delivery waiting to be sent, by connector (0 when none waits)",
            delivery_oldest_pending.clone(),
        );
        let delivery_latency = Family::<ConnectorLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from an event's creation to its delivery, by connector",
            delivery_latency.clone(),
        );
        let meeting_uploads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "meeting_uploads",
            "Recordings taken from drop folders, by outcome",
            meeting_uploads.clone(),
        );
        let meeting_folders_blocked = Gauge::default();
        registry.register(
            "meeting_folders_blocked",
            "Drop folders taking nothing because their processed/ or failed/ is a link or not a directory",
            meeting_folders_blocked.clone(),
        );
        let items_skipped = Family::<SourceLabels, Counter>::default();
        registry.register(
            "items_skipped",
            "API items that failed to parse and were skipped, by source",
            items_skipped.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The running build's version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        Self {
            registry: Arc::new(registry),
            api_requests,
            api_rate_limit_remaining,
            api_throttled,
            poll_runs,
            last_success,
            source_stale,
            source_leader,
            instances,
            state_up,
            events,
            deliveries,
            delivery_queue_depth,
            delivery_oldest_pending,
            delivery_latency,
            meeting_uploads,
            meeting_folders_blocked,
            items_skipped,
            build_info,
        }
    }

    /// Counts one request to the Clairo API. `endpoint` is a route template such as
    /// `GET /conversations/{id}`; `status` the HTTP status, or `error` for a transport failure.
    pub fn api_request(&self, endpoint: &str, status: &str) {
        self.api_requests
            .get_or_create(&ApiRequestLabels {
                endpoint: endpoint.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// Creates every bounded label set up front, so each contract metric is exposed (at
    /// zero) from the first scrape, and alert rules see a series before anything happens.
    pub fn init_labels<'a>(
        &self,
        sources: &[&str],
        connectors: impl IntoIterator<Item = &'a String>,
    ) {
        for source in sources.iter().chain(["meetings"].iter()) {
            for outcome in ["success", "failure"] {
                let _ = self.poll_runs.get_or_create(&PollLabels {
                    source: (*source).to_owned(),
                    outcome: outcome.to_owned(),
                });
            }
            let _ = self.items_skipped.get_or_create(&SourceLabels {
                source: (*source).to_owned(),
            });
        }
        for source in sources {
            let labels = SourceLabels {
                source: (*source).to_owned(),
            };
            let _ = self.last_success.get_or_create(&labels);
            let _ = self.source_stale.get_or_create(&labels);
            let _ = self.source_leader.get_or_create(&labels);
        }
        for kind in ["brief.created", "conversation.updated", "meeting.processed"] {
            let _ = self.events.get_or_create(&TypeLabel {
                r#type: kind.to_owned(),
            });
        }
        for connector in connectors {
            for outcome in ["delivered", "retry", "dead"] {
                let _ = self.deliveries.get_or_create(&DeliveryLabels {
                    connector: connector.clone(),
                    outcome: outcome.to_owned(),
                });
            }
            let labels = ConnectorLabels {
                connector: connector.clone(),
            };
            let _ = self.delivery_queue_depth.get_or_create(&labels);
            let _ = self.delivery_oldest_pending.get_or_create(&labels);
            let _ = self.delivery_latency.get_or_create(&labels);
        }
        for outcome in ["uploaded", "duplicate", "rejected", "failed"] {
            let _ = self.meeting_uploads.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_name_is_exposed() {
        let metrics = Metrics::new();
        metrics.api_request("GET /agents", "200");
        metrics
            .events
            .get_or_create(&TypeLabel {
                r#type: "brief.created".into(),
            })
            .inc();
        let text = metrics.encode_openmetrics();
        assert!(
            text.contains("clairo_sync_events_total{type=\"brief.created\"} 1"),
            "{text}"
        );
        assert!(text.contains("clairo_sync_build_info{version="), "{text}");
    }
}
