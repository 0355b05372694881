//! What the sandbox saw: request counts by endpoint and status, throttling, uploads and a
//! per-request log, for tests and benchmarks to assert on.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Most recent requests kept in the log. A million covers any benchmark run while keeping a
/// long-running demo sandbox from growing without bound (24 bytes an entry).
const LOG_CAPACITY: usize = 1_000_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Every `/api/v1` request, including those answered 401, 403 or 429.
    pub requests: u64,
    /// By route template, e.g. "GET /conversations/{id}"; unknown routes count as "OTHER".
    pub by_endpoint: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Requests refused by the rate limiter (not 429s injected with `fail_next`).
    pub throttled: u64,
    /// Accepted meeting uploads, in order.
    pub uploads: Vec<UploadRecord>,
    /// Requests in arrival order (the most recent million).
    pub log: Vec<RequestRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub meeting_id: String,
    pub agent_id: String,
    pub title: String,
    pub file_name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the audio as received.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When the request arrived.
    pub unix_ms: u64,
    pub endpoint: String,
    pub status: u16,
}

/// The live counters; `&'static str` endpoints keep recording allocation-free.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    requests: u64,
    by_endpoint: HashMap<&'static str, u64>,
    by_status: HashMap<u16, u64>,
    throttled: u64,
    uploads: Vec<UploadRecord>,
    log: VecDeque<(u64, &'static str, u16)>,
}

impl Recorder {
    pub(crate) fn record(
        &mut self,
        unix_ms: u64,
        endpoint: &'static str,
        status: u16,
        throttled: bool,
    ) {
        self.requests += 1;
        *self.by_endpoint.entry(endpoint).or_default() += 1;
        *self.by_status.entry(status).or_default() += 1;
        if throttled {
            self.throttled += 1;
        }
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back((unix_ms, endpoint, status));
    }

    pub(crate) fn upload(&mut self, record: UploadRecord) {
        self.uploads.push(record);
    }

    /// A copy of the counters; `with_log: false` skips the (possibly large) log.
    pub(crate) fn snapshot(&self, with_log: bool) -> Stats {
        Stats {
            requests: self.requests,
            by_endpoint: self
                .by_endpoint
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            by_status: self.by_status.iter().map(|(k, v)| (*k, *v)).collect(),
            throttled: self.throttled,
            uploads: self.uploads.clone(),
            log: if with_log {
                self.log
                    .iter()
                    .map(|&(unix_ms, endpoint, status)| RequestRecord {
                        unix_ms,
                        endpoint: endpoint.to_owned(),
                        status,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}
