//! The auth gate: whether Clairo accepts the key. One per process, shared by the pollers,
//! the drop-folder uploads and `/readyz`, so a 401/403 met by any of them pauses them all
//! and turns readiness false; a reload (SIGHUP) or an accepted request opens it again
//! (docs/architecture.md, section 4).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After Clairo rejects the key (401) or the plan (403), polling and uploads pause this
/// long: the problem needs a person, and hammering the API with a bad key helps nobody.
/// A reload (SIGHUP) ends the pause at once.
pub const AUTH_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// Shared between the sources and the health endpoint.
#[derive(Debug, Default)]
pub struct AuthGate {
    refused: Mutex<Option<Refusal>>,
}

/// Clairo's last refusal: why, and until when requests wait.
#[derive(Debug)]
struct Refusal {
    until: Instant,
    reason: String,
}

impl AuthGate {
    /// Clairo refused the credentials: pause for [`AUTH_BACKOFF`]. Returns when the pause
    /// ends, and whether the gate was open before (say so in the log then, once).
    pub fn refuse(&self, reason: String) -> (Instant, bool) {
        let until = Instant::now() + AUTH_BACKOFF;
        let previous = self.lock().replace(Refusal { until, reason });
        (until, previous.is_none())
    }

    /// Clairo accepted a request, or the config was reloaded: the pause ends. True when
    /// the credentials had been refused before.
    pub fn accept(&self) -> bool {
        self.lock().take().is_some()
    }

    /// Until when requests wait, while they do.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock()
            .as_ref()
            .map(|refusal| refusal.until)
            .filter(|until| Instant::now() < *until)
    }

    /// Why requests wait, while they do.
    pub fn paused(&self) -> Option<String> {
        self.lock()
            .as_ref()
            .filter(|refusal| Instant::now() < refusal.until)
            .map(|refusal| refusal.reason.clone())
    }

    /// Why the last answer was a refusal, even once the pause is over (for readiness: the
    /// key is not known to work until a request succeeds).
    pub fn rejected(&self) -> Option<String> {
        self.lock().as_ref().map(|refusal| refusal.reason.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Refusal>> {
        self.refused.lock().expect("auth gate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_pauses_until_accepted_and_says_it_first_once() {
        let gate = AuthGate::default();
        assert_eq!(gate.paused(), None);
        let (until, first) = gate.refuse("401".to_owned());
        assert!(first);
        assert!(until > Instant::now());
        assert_eq!(gate.paused_until(), Some(until));
        assert_eq!(gate.paused().as_deref(), Some("401"));
        let (_, again) = gate.refuse("401 again".to_owned());
        assert!(!again, "the second refusal is not news");
        assert_eq!(gate.rejected().as_deref(), Some("401 again"));
        assert!(gate.accept());
        assert_eq!(gate.rejected(), None);
        assert_eq!(gate.paused_until(), None);
        assert!(!gate.accept(), "nothing was refused since");
    }
}
