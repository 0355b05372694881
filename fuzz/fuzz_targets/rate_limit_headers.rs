//! Any bytes as the rate-limit headers of up to three answers, through the parser and the
//! limiter's pacing arithmetic: no panic, and no answer makes a request wait longer than
//! one window (plus the limiter's slack and jitter), whatever the server claims.
#![no_main]

use clairo_sync::clairo::{
    Answered, MAX_PACING_WAIT, MAX_RESET_WAIT, RateLimitHeaders, wait_after_answers,
};
use http::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The headers the limiter reads, in the order an answer's lines fill them.
const HEADERS: [&str; 5] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "date",
];

/// Local clocks to read the headers against: the epoch, now-ish, far off, and nonsense.
const CLOCKS: [f64; 5] = [0.0, 1_800_000_000.0, 4.0e9, -1.0e12, f64::NAN];

fuzz_target!(|data: &[u8]| {
    // First byte: which answers were 429s (bit n for answer n); the rest: answers
    // separated by a NUL byte, each a header value per line in the order of HEADERS.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut answers = Vec::new();
    for (index, block) in rest.split(|byte| *byte == 0).take(3).enumerate() {
        let mut headers = HeaderMap::new();
        for (name, line) in HEADERS.iter().zip(block.split(|byte| *byte == b'\n')) {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.insert(*name, value);
            }
        }
        let parsed = RateLimitHeaders::from_headers(&headers);
        answers.push(Answered {
            headers: parsed,
            throttled: flags & (1 << index) != 0,
        });
    }
    for local_unix in CLOCKS {
        for answer in &answers {
            if let Some(until) = answer.headers.until_reset(local_unix) {
                assert!(until <= MAX_RESET_WAIT, "until_reset {until:?}");
            }
            let _ = answer.headers.beyond_window(local_unix);
        }
        let wait = wait_after_answers(&answers, local_unix);
        assert!(wait <= MAX_PACING_WAIT, "waited {wait:?} after {answers:?}");
    }
    for answer in &answers {
        if let Some(retry_after) = answer.headers.retry_after_capped() {
            assert!(retry_after <= MAX_RESET_WAIT);
        }
    }
});
