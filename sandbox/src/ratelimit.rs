//! Fixed-window rate limiting per API key, reported the way the docs' headers describe.
//!
//! A window opens at the first request after the previous one ended and lasts `window`;
//! `Reset` is the window's end in unix seconds rounded *up*, so a client that waits until
//! `Reset` is always past it. Rejected requests do not consume budget.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed { remaining: u32, reset_s: u64 },
    Limited { reset_s: u64, wait_ms: u64 },
}

#[derive(Debug)]
struct Window {
    end_ms: i64,
    used: u32,
}

#[derive(Debug)]
pub(crate) struct FixedWindow {
    limit: u32,
    window_ms: i64,
    windows: HashMap<String, Window>,
}

impl FixedWindow {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window_ms: window_ms(window),
            windows: HashMap::new(),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// New settings apply at once: open windows are forgotten, so the next request starts
    /// a window of the new length instead of finishing one of the old.
    pub(crate) fn configure(&mut self, limit: u32, window: Duration) {
        self.limit = limit;
        self.window_ms = window_ms(window);
        self.windows.clear();
    }

    pub(crate) fn forget(&mut self, key: &str) {
        self.windows.remove(key);
    }

    pub(crate) fn check(&mut self, key: &str, now_ms: i64) -> Verdict {
        // `get_mut` first: the common case allocates nothing for the key.
        let window = match self.windows.get_mut(key) {
            Some(w) if now_ms < w.end_ms => w,
            Some(w) => {
                *w = Window {
                    end_ms: now_ms + self.window_ms,
                    used: 0,
                };
                w
            }
            None => self.windows.entry(key.to_owned()).or_insert(Window {
                end_ms: now_ms + self.window_ms,
                used: 0,
            }),
        };
        let reset_s = (window.end_ms.max(0) as u64).div_ceil(1000);
        if window.used < self.limit {
            window.used += 1;
            Verdict::Allowed {
                remaining: self.limit - window.used,
                reset_s,
            }
        } else {
            Verdict::Limited {
                reset_s,
                wait_ms: (window.end_ms - now_ms).max(0) as u64,
            }
        }
    }
}

fn window_ms(window: Duration) -> i64 {
    // A zero window would make every request open a new one; one millisecond is the floor.
    i64::try_from(window.as_millis())
        .unwrap_or(i64::MAX / 2)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_runs_out_then_returns_after_the_window() {
        let mut rl = FixedWindow::new(2, Duration::from_millis(1500));
        let t0 = 1_000_000_200;
        assert_eq!(
            rl.check("k", t0),
            Verdict::Allowed {
                remaining: 1,
                reset_s: 1_000_002
            }
        );
        assert_eq!(
            rl.check("k", t0 + 10),
            Verdict::Allowed {
                remaining: 0,
                reset_s: 1_000_002
            }
        );
        assert_eq!(
            rl.check("k", t0 + 20),
            Verdict::Limited {
                reset_s: 1_000_002,
                wait_ms: 1480
            }
        );
        // Another business is unaffected.
        assert!(matches!(
            rl.check("other", t0 + 20),
            Verdict::Allowed { .. }
        ));
        // Waiting until Reset (rounded up) is always enough.
        assert!(matches!(
            rl.check("k", 1_000_002_000),
            Verdict::Allowed { remaining: 1, .. }
        ));
    }

    #[test]
    fn reconfiguring_starts_fresh_windows() {
        let mut rl = FixedWindow::new(1, Duration::from_secs(60));
        rl.check("k", 0);
        assert!(matches!(rl.check("k", 1), Verdict::Limited { .. }));
        rl.configure(5, Duration::from_secs(1));
        assert_eq!(
            rl.check("k", 2),
            Verdict::Allowed {
                remaining: 4,
                reset_s: 2
            }
        );
    }
}
