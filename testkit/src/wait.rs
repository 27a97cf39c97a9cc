//! The one way a test waits: poll a check until it holds or a deadline passes, then fail the
//! test with a message naming what was awaited.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// How often a check is polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it yields `Some`, and returns that value. Panics with "timed out after
/// … waiting for {what}" once `within` has passed (the check runs at least once after it).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        let expired = Instant::now() >= deadline;
        if let Some(value) = check().await {
            return value;
        }
        assert!(!expired, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a check that is a plain condition.
pub async fn eventually_true<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let calls = AtomicU32::new(0);
        let got = eventually("the third call", Duration::from_secs(5), || async {
            (calls.fetch_add(1, Ordering::SeqCst) == 2).then_some("done")
        })
        .await;
        assert_eq!(got, "done");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a condition that never holds")]
    async fn fails_naming_what_it_waited_for() {
        eventually_true(
            "a condition that never holds",
            Duration::from_millis(50),
            || async { false },
        )
        .await;
    }
}
