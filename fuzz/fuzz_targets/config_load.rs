//! Any TOML text through the config loader (and every schedule it accepts through the
//! scheduler): an error is fine, a panic or a hang is not.
#![no_main]

use clairo_sync::config::{Need, Schedule, SecretSources, load_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // No credentials directory and no CLAIRO_API_KEY: only what the text says.
    let sources = SecretSources::default();
    for need in [Need::Daemon, Need::ApiOnly] {
        if let Ok(loaded) = load_str(text, need, &sources) {
            let now = chrono::Utc::now();
            let sync = &loaded.config.sync;
            let schedules = sync.briefs.iter().map(|briefs| &briefs.schedule).chain(
                sync.conversations
                    .iter()
                    .map(|conversations| &conversations.schedule),
            );
            for schedule in schedules {
                let _ = schedule.next_after(now);
            }
        }
    }
    // A schedule on its own, as `[sync.*] schedule` would hold it.
    if text.len() < 200
        && let Ok(schedule) = Schedule::parse(text)
    {
        let _ = schedule.next_after(chrono::Utc::now());
    }
});
