//! Any bytes as a Clairo answer: the body through every list and object decoder the
//! client uses, and the same bytes as rate-limit headers. An error is fine, a panic is not.
#![no_main]

use clairo_sync::clairo::{RateLimitHeaders, decode_as_every_answer};
use http::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The headers the client reads, in the order the input's lines fill them.
const HEADERS: [&str; 5] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "date",
];

fuzz_target!(|data: &[u8]| {
    decode_as_every_answer(data);

    let mut headers = HeaderMap::new();
    for (name, line) in HEADERS.iter().zip(data.split(|byte| *byte == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.insert(*name, value);
        }
    }
    let parsed = RateLimitHeaders::from_headers(&headers);
    for local_unix in [0.0, 1_800_000_000.0, f64::from(u32::MAX)] {
        let _ = parsed.until_reset(local_unix);
    }
});
