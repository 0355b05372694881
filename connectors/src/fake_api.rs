//! What the fake CRM APIs share: a local server, and the bookkeeping of calls, injected
//! faults and refused requests. For the connectors' own tests and, with the `fakes`
//! feature, the daemon's integration tests; never in a release build.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;

/// Serves `router` on a free port of 127.0.0.1 until the test ends; returns its base
/// address (`http://127.0.0.1:PORT`).
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// A fake API on 127.0.0.1: its own `data` (`D`), the calls it got by route (`R`), the
/// faults (`F`) it was told to meet, and the requests it refused for their shape. Clones
/// share it all.
pub struct FakeApi<D, R, F> {
    /// The credential it accepts.
    pub token: Arc<String>,
    state: Arc<Mutex<Recorded<D, R, F>>>,
    pub base_url: String,
}

impl<D, R, F> Clone for FakeApi<D, R, F> {
    fn clone(&self) -> Self {
        Self {
            token: Arc::clone(&self.token),
            state: Arc::clone(&self.state),
            base_url: self.base_url.clone(),
        }
    }
}

/// A fake API's state: its data (reached through `Deref`) and what it recorded.
pub struct Recorded<D, R, F> {
    data: D,
    faults: Vec<(R, F, u32)>,
    calls: Vec<R>,
    rejections: Vec<String>,
}

impl<D, R, F> Deref for Recorded<D, R, F> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.data
    }
}

impl<D, R, F> DerefMut for Recorded<D, R, F> {
    fn deref_mut(&mut self) -> &mut D {
        &mut self.data
    }
}

impl<D, R: Copy + PartialEq, F: Clone> Recorded<D, R, F> {
    /// Records a call of `route`, and takes the fault it is to meet, if any.
    pub fn call(&mut self, route: R) -> Option<F> {
        self.calls.push(route);
        let slot = self
            .faults
            .iter_mut()
            .find(|(at, _, times)| *at == route && *times > 0)?;
        slot.2 -= 1;
        Some(slot.1.clone())
    }

    /// Records a request refused for its shape.
    pub fn reject(&mut self, message: &str) {
        self.rejections.push(message.to_owned());
    }
}

impl<D, R, F> FakeApi<D, R, F>
where
    D: Send + 'static,
    R: Copy + PartialEq + Send + 'static,
    F: Clone + Send + 'static,
{
    /// Starts the fake, accepting `token`, with `router` answering every request.
    pub async fn listen(token: &str, data: D, router: Router<Self>) -> Self {
        let mut fake = Self {
            token: Arc::new(token.to_owned()),
            state: Arc::new(Mutex::new(Recorded {
                data,
                faults: Vec::new(),
                calls: Vec::new(),
                rejections: Vec::new(),
            })),
            base_url: String::new(),
        };
        // The server's clone never reads `base_url`, which is known only once it listens.
        fake.base_url = serve(router.with_state(fake.clone())).await;
        fake
    }

    /// The next `times` calls of `route` meet `fault`.
    pub fn inject(&self, route: R, fault: F, times: u32) {
        self.lock().faults.push((route, fault, times));
    }

    pub fn calls(&self, route: R) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|call| **call == route)
            .count()
    }

    pub fn total_calls(&self) -> usize {
        self.lock().calls.len()
    }

    /// Requests answered 400 because their shape was wrong.
    pub fn rejections(&self) -> Vec<String> {
        self.lock().rejections.clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, Recorded<D, R, F>> {
        self.state.lock().unwrap()
    }
}
