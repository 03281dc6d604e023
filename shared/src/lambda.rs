use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

use crate::engine::Rotation;
use crate::{Error, Rotator, SecretsManager};

/// The whole `main` of a rotation function: logging, then `build` makes the rotation (settings
/// and clients, once per process), then the Secrets Manager client, then events are served.
/// A `build` error stops the function at start, logged with the variable it names. A rotation
/// step answers `null`; an operator's `{"Action": "check", "SecretId": "..."}` answers the
/// check's report ([`crate::check::Report`]) as the invocation's JSON result.
pub async fn serve<R: Rotation>(build: impl FnOnce() -> Result<R, Error>) -> Result<(), lambda_runtime::Error> {
    init_logging();
    let rotation = build().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let store = SecretsManager::from_env().await;
    let rotator = Rotator::new(store, rotation);
    let rotator = &rotator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<crate::event::Payload>| async move {
        let deadline = deadline_instant(event.context.deadline);
        // Boxed: the nested step futures are too deep for the compiler's layout of `main`.
        crate::deadline::within(deadline, Box::pin(rotator.handle(event.payload))).await.map_err(Diagnostic::from)
    }))
    .await
}

/// The runtime gives the deadline in milliseconds since the Unix epoch; timers want an `Instant`.
/// A deadline already past when the event arrives is no real deadline (Lambda's are always
/// ahead; some local emulators send none or a bogus one): the step then runs with its own
/// bounds only.
fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    match Duration::from_millis(deadline_ms).checked_sub(now) {
        Some(left) if !left.is_zero() => {
            tracing::debug!(left_ms = left.as_millis() as u64, "the invocation's deadline");
            Some(Instant::now() + left)
        }
        _ => {
            tracing::debug!(deadline_ms, "the invocation's deadline is not ahead: ignored");
            None
        }
    }
}

/// Logs as Lambda's advanced logging controls ask: `AWS_LAMBDA_LOG_FORMAT=JSON` gives one flat
/// JSON object per line in Lambda's shape (`crate::logging`), anything else the text format; the
/// level is `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO, but never below DEBUG, whatever
/// the variables say: at TRACE the runtime logs each raw event (with its `RotationToken`) and the
/// AWS SDK each request body (with the new secret value).
fn init_logging() {
    use lambda_runtime::tracing::subscriber::filter::LevelFilter;
    use lambda_runtime::tracing::subscriber::{fmt, prelude::*, registry};

    let requested = crate::logging::level_filter(&|name| std::env::var(name).ok());
    let logs = registry().with(LevelFilter::DEBUG).with(requested);
    if std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.with(crate::logging::LambdaJson::new(std::io::stdout)).init();
    } else {
        logs.with(fmt::layer().with_target(false).without_time()).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch_ms_in(offset: Duration) -> u64 {
        (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + offset).as_millis() as u64
    }

    #[test]
    fn a_deadline_ahead_becomes_an_instant_that_far_ahead() {
        let deadline = deadline_instant(epoch_ms_in(Duration::from_secs(30))).unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30), "{left:?}");
    }

    #[test]
    fn a_deadline_that_is_not_ahead_is_ignored() {
        assert!(deadline_instant(0).is_none());
        assert!(deadline_instant(30_000).is_none(), "a duration, not a time");
        assert!(deadline_instant(epoch_ms_in(Duration::ZERO).saturating_sub(1000)).is_none());
    }
}
