//! What a CRM connector remembers of the records it found or made (a company by domain, a
//! person by email): enough to bridge the seconds a CRM's search index lags behind its
//! writes, so that two briefs moments apart do not both miss and both create. Entries
//! expire, so a record merged or deleted in the CRM since is looked up again, and the
//! memory is bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an entry is trusted: far longer than a search index lags, short enough that a
/// record deleted in the CRM costs a replay at most this long after.
const KEPT_FOR: Duration = Duration::from_secs(10 * 60);

/// Entries at most: a busy day's briefs. Past it the memory starts over.
const CAPACITY: usize = 10_000;

/// What is remembered of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Remembered<Id> {
    /// The record's id.
    Known(Id),
    /// A create sent with this context (for HubSpot, the contact it was associated with)
    /// ended without an answer: the record may exist before the CRM's search shows it.
    MaybeCreated(String),
}

/// Keys (lowercase) to what is remembered of them, each for [`KEPT_FOR`].
pub(crate) struct Recent<Id> {
    entries: HashMap<String, (Remembered<Id>, Instant)>,
}

impl<Id: Clone> Default for Recent<Id> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<Id: Clone> Recent<Id> {
    pub fn get(&self, key: &str) -> Option<Remembered<Id>> {
        self.entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < KEPT_FOR)
            .map(|(what, _)| what.clone())
    }

    pub fn remember(&mut self, key: &str, what: Remembered<Id>) {
        if self.entries.len() >= CAPACITY {
            self.entries.retain(|_, (_, at)| at.elapsed() < KEPT_FOR);
            if self.entries.len() >= CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(key.to_owned(), (what, Instant::now()));
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_id_is_found_until_forgotten() {
        let mut recent = Recent::default();
        recent.remember("acme.io", Remembered::Known(7_u64));
        assert_eq!(recent.get("acme.io"), Some(Remembered::Known(7)));
        assert_eq!(recent.get("globex.com"), None);
        recent.forget("acme.io");
        assert_eq!(recent.get("acme.io"), None);
    }
}
