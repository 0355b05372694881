//! The outbox's doorbell: whoever commits deliveries rings the workers of their
//! connectors, so a new event goes out at once rather than on the dispatcher's next look.
//! It lives beside the store because it says "new rows", so the sources ring it and the
//! dispatcher listens without either importing the other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Wakes the dispatcher's worker for a connector as soon as a delivery is queued for it.
#[derive(Clone, Default)]
pub struct Wakers {
    inner: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Wakers {
    pub fn for_connector(&self, connector: &str) -> Arc<Notify> {
        let mut map = self.inner.lock().expect("wakers lock");
        map.entry(connector.to_owned()).or_default().clone()
    }

    pub fn wake(&self, connectors: &[String]) {
        for connector in connectors {
            self.for_connector(connector).notify_one();
        }
    }
}
