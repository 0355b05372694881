//! Talking to systemd (Type=notify): readiness, reloading and stopping notifications, and
//! the watchdog ping. Each is a no-op outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::shutdown::CancellationToken;
use crate::store::Store;

use super::{StateHealth, every};

/// Tells systemd about the daemon's state; a no-op outside systemd.
pub(super) fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(error) = sd_notify::notify(states)
    {
        tracing::warn!(%error, "Cannot notify systemd.");
    }
}

/// Pings systemd's watchdog at half its interval, only while the state database takes
/// writes: a daemon that cannot record anything is restarted rather than left stuck. A
/// PostgreSQL state is watched by the daemon itself, which waits for it to come back (a
/// restart would not bring it sooner): then the ping says only that the process runs.
pub(super) async fn watchdog(
    interval: Duration,
    store: Store,
    state: StateHealth,
    stop: CancellationToken,
) {
    every(interval / 2, &stop, || async {
        if state.is_watched() {
            notify(&[NotifyState::Watchdog]);
            return;
        }
        match store.check_writable().await {
            Ok(()) => notify(&[NotifyState::Watchdog]),
            Err(error) => {
                tracing::error!(%error, "The state database does not take writes; withholding the watchdog ping.")
            }
        }
    })
    .await;
}
