//! Any text as ffmpeg's messages about a recording (ffmpeg prints what a file's headers
//! claim, so whoever drops a file chooses much of it): the length the transcoder reads
//! from them. `None` is fine; a panic, an overflow or a length beyond
//! `LONGEST_BELIEVABLE` is not.
#![no_main]

use clairo_sync::sources::meetings::transcode::{
    LONGEST_BELIEVABLE, human_duration, parse_duration,
};
use libfuzzer_sys::fuzz_target;

/// The text alone, and framed where ffmpeg puts a length (so mutations reach the number
/// parsing without first having to find `Duration: `).
fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let framed = format!(
        "Input #0, wav, from 'file:/proc/self/fd/0':\n  Duration: {text}, bitrate: 256 kb/s\n"
    );
    for messages in [text.as_ref(), framed.as_str()] {
        if let Some(length) = parse_duration(messages) {
            assert!(length <= LONGEST_BELIEVABLE, "{length:?} from {messages:?}");
            let _ = human_duration(length);
        }
    }
}

fuzz_target!(|data: &[u8]| check(data));
