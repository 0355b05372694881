//! What the sandbox saw: request counts by endpoint and status, throttling, uploads and a
//! per-request log, for tests and benchmarks to assert on.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Most recent requests kept in the log. A million covers any benchmark run while keeping a
/// long-running demo sandbox from growing without bound (32 bytes an entry).
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
    /// The last four characters of the bearer key it carried ("" without one, or when the
    /// key is not ASCII): which client made the request, when clients are given distinct
    /// keys, without the key itself in the log.
    #[serde(default)]
    pub key_suffix: String,
}

/// How many characters of a key the log keeps.
const KEY_SUFFIX_LEN: usize = 4;

/// The last [`KEY_SUFFIX_LEN`] bytes of an ASCII key, inline (recording stays
/// allocation-free); a shorter key is kept whole, left-padded with NULs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeySuffix([u8; KEY_SUFFIX_LEN]);

impl KeySuffix {
    pub(crate) fn of(key: Option<&str>) -> Self {
        let mut suffix = [0; KEY_SUFFIX_LEN];
        if let Some(key) = key.filter(|key| key.is_ascii()) {
            let tail = &key.as_bytes()[key.len().saturating_sub(KEY_SUFFIX_LEN)..];
            suffix[KEY_SUFFIX_LEN - tail.len()..].copy_from_slice(tail);
        }
        Self(suffix)
    }

    fn text(self) -> String {
        self.0
            .iter()
            .filter(|byte| **byte != 0)
            .map(|byte| char::from(*byte))
            .collect()
    }
}

/// The live counters; `&'static str` endpoints keep recording allocation-free.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    requests: u64,
    by_endpoint: HashMap<&'static str, u64>,
    by_status: HashMap<u16, u64>,
    throttled: u64,
    uploads: Vec<UploadRecord>,
    log: VecDeque<(u64, &'static str, u16, KeySuffix)>,
}

impl Recorder {
    pub(crate) fn record(
        &mut self,
        unix_ms: u64,
        endpoint: &'static str,
        status: u16,
        throttled: bool,
        key: KeySuffix,
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
        self.log.push_back((unix_ms, endpoint, status, key));
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
                    .map(|&(unix_ms, endpoint, status, key)| RequestRecord {
                        unix_ms,
                        endpoint: endpoint.to_owned(),
                        status,
                        key_suffix: key.text(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_last_four_characters_of_a_key_and_never_the_key() {
        let mut recorder = Recorder::default();
        for key in [
            Some("clr_secret_part_a001"),
            Some("ab"),
            None,
            Some("clé_x1"),
        ] {
            recorder.record(1, "GET /briefs", 200, false, KeySuffix::of(key));
        }
        let suffixes: Vec<String> = recorder
            .snapshot(true)
            .log
            .into_iter()
            .map(|record| record.key_suffix)
            .collect();
        assert_eq!(suffixes, ["a001", "ab", "", ""]);
    }
}
