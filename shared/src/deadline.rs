//! The invocation's deadline, known to every call a step makes without being passed around.
//!
//! Lambda gives each invocation a deadline; a step that runs into it ends as "Task timed out"
//! with no word of what hung. The engine runs each step inside [`within`], and whatever can
//! wait (a login, a statement, a lock) asks [`bound`] how long it may.

use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Time kept back from the deadline to report an error before Lambda ends the invocation.
pub const REPORTING_MARGIN: Duration = Duration::from_millis(1500);

/// The shortest bound handed out, so a nearly spent invocation still fails with a clear error.
const MINIMUM: Duration = Duration::from_millis(100);

/// Runs `work` with `deadline` as the invocation's deadline (none outside Lambda).
pub async fn within<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, work).await,
        None => work.await,
    }
}

/// What is left of the invocation, less the reporting margin; `None` without a deadline.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()).saturating_sub(REPORTING_MARGIN))
        .ok()
}

/// `limit`, or less when the invocation ends sooner.
pub fn bound(limit: Duration) -> Duration {
    match remaining() {
        Some(left) => limit.min(left).max(MINIMUM),
        None => limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_deadline_the_limit_holds() {
        assert_eq!(bound(Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(remaining(), None);
    }

    #[tokio::test]
    async fn a_near_deadline_shortens_every_bound() {
        let deadline = Instant::now() + Duration::from_secs(4);
        within(Some(deadline), async {
            let bounded = bound(Duration::from_secs(60));
            assert!(bounded <= Duration::from_millis(2500) && bounded > Duration::from_secs(2), "{bounded:?}");
            assert_eq!(bound(Duration::from_secs(1)), Duration::from_secs(1));
        })
        .await;
    }

    #[tokio::test]
    async fn a_spent_invocation_still_gets_a_moment_to_fail_clearly() {
        within(Some(Instant::now()), async { assert_eq!(bound(Duration::from_secs(5)), MINIMUM) }).await;
    }
}
