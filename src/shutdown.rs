//! Stopping: one [`CancellationToken`] handed to every task (a child token per config
//! generation, so a reload retires one generation without stopping the process), and
//! [`drain`], the one way in-flight work ends: it finishes, or is given up after a timeout.

use std::time::Duration;

use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

/// Waits up to `grace` for every task in `tasks` to finish; then aborts the ones still
/// going and waits for them to end. Returns how many were aborted (0: all finished), for
/// the caller to say what that means for its work.
pub async fn drain<T: 'static>(tasks: &mut JoinSet<T>, grace: Duration) -> usize {
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_ok() {
        return 0;
    }
    let left = tasks.len();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_finishes_in_time_is_not_aborted() {
        let mut tasks = JoinSet::new();
        tasks.spawn(tokio::time::sleep(Duration::from_millis(10)));
        assert_eq!(drain(&mut tasks, Duration::from_secs(30)).await, 0);
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn work_still_going_at_the_timeout_is_aborted_and_counted() {
        let mut tasks = JoinSet::new();
        tasks.spawn(tokio::time::sleep(Duration::from_millis(10)));
        tasks.spawn(tokio::time::sleep(Duration::from_secs(3600)));
        let started = std::time::Instant::now();
        assert_eq!(drain(&mut tasks, Duration::from_millis(200)).await, 1);
        assert!(tasks.is_empty());
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
