//! What the Slack and Teams stand-ins share: a webhook on 127.0.0.1 that records the
//! messages it accepted and the requests it refused, and meets injected faults in order.
//! Each service's fake (`slack::fake`, `teams::fake`) says how it answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::handler::Handler;
use serde_json::Value;

/// A running chat webhook whose faults are `F`; clones share its state.
pub struct Hook<F> {
    /// The webhook URL to configure, shaped like the service's own.
    pub url: String,
    path: Arc<String>,
    inner: Arc<Mutex<Inner<F>>>,
}

impl<F> Clone for Hook<F> {
    fn clone(&self) -> Self {
        Self {
            url: self.url.clone(),
            path: Arc::clone(&self.path),
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<F> {
    faults: Vec<(F, u32)>,
    messages: Vec<Value>,
    rejections: Vec<(u16, String)>,
    requests: usize,
}

impl<F> Default for Inner<F> {
    fn default() -> Self {
        Self {
            faults: Vec::new(),
            messages: Vec::new(),
            rejections: Vec::new(),
            requests: 0,
        }
    }
}

impl<F: Clone + Send + Sync + 'static> Hook<F> {
    /// Starts a webhook on 127.0.0.1 answering every request with `handler`; `path` is
    /// where it listens, and `url` makes the address to configure from the bound one.
    pub(crate) async fn serve<H, T>(
        path: &str,
        url: impl FnOnce(SocketAddr) -> String,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Self>,
        T: 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("a local address");
        let hook = Self {
            url: url(address),
            path: Arc::new(path.to_owned()),
            inner: Arc::default(),
        };
        let router = Router::new().fallback(handler).with_state(hook.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        hook
    }

    /// The next `times` requests meet `fault`.
    pub fn inject(&self, fault: F, times: u32) {
        self.lock().faults.push((fault, times));
    }

    /// The messages the service would have posted.
    pub fn messages(&self) -> Vec<Value> {
        self.lock().messages.clone()
    }

    /// Requests refused for their shape or size: status and the service's word or error.
    pub fn rejections(&self) -> Vec<(u16, String)> {
        self.lock().rejections.clone()
    }

    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Waits until `count` messages were posted, or `within` has passed.
    pub async fn wait_for_messages(&self, count: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the webhook listens; other paths are answered as a removed webhook.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn count_request(&self) {
        self.lock().requests += 1;
    }

    /// The fault the next request meets, if any is left.
    pub(crate) fn take_fault(&self) -> Option<F> {
        let mut inner = self.lock();
        let slot = inner.faults.iter_mut().find(|(_, times)| *times > 0)?;
        slot.1 -= 1;
        Some(slot.0.clone())
    }

    pub(crate) fn accept(&self, message: Value) {
        self.lock().messages.push(message);
    }

    pub(crate) fn refuse(&self, status: u16, said: String) {
        self.lock().rejections.push((status, said));
    }

    fn lock(&self) -> MutexGuard<'_, Inner<F>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
