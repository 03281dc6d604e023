//! The kinds of rotation, built as the functions build them, from the same variables.

use std::marker::PhantomData;

use rotation::check::Report;
use rotation::{DatabaseRotation, Error, Rotation, Settings, Target};

/// One kind of rotation, built as its function builds it.
pub trait Kind {
    type R: Rotation;

    fn build() -> Result<Self::R, Error>;
}

pub struct Db<T>(PhantomData<T>);

impl<T: Target> Kind for Db<T> {
    type R = DatabaseRotation<T>;

    /// What `rotation::database::run` builds.
    fn build() -> Result<Self::R, Error> {
        let settings = Settings::from_env(&T::ENGINE)?;
        T::check_policy(&settings.policy)?;
        Ok(DatabaseRotation::new(T::new(settings.connect.clone()), settings))
    }
}

pub struct ApiKey;

impl Kind for ApiKey {
    type R = api_key_rotation::ApiKeyRotation;

    fn build() -> Result<Self::R, Error> {
        api_key_rotation::ApiKeyRotation::from_env()
    }
}

fn about_current(name: &str) -> bool {
    name.starts_with("target.") || name.starts_with("current.") || name == "credential.current"
}

/// The failed checks that keep a report from proving that the target accepts `AWSCURRENT`: a
/// report proves it with no failed check about the
/// target or the current credentials (`target.*`, `credential.current`, `current.*`), or, when
/// none of those ran, no failed check at all.
pub fn blocking_failures(report: &Report) -> Vec<&rotation::check::Check> {
    use rotation::check::Status;
    let relevant: Vec<_> =
        report.checks.iter().filter(|c| about_current(&c.name) && c.status != Status::Skipped).collect();
    let failed = |c: &&rotation::check::Check| c.status == Status::Failed;
    if relevant.is_empty() {
        report.checks.iter().filter(failed).collect()
    } else {
        relevant.into_iter().filter(failed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_and_current_checks_decide_else_the_whole_report() {
        let mut report = Report::new("s", "PostgreSQL");
        report.passed("secret.describe", "ok");
        assert!(blocking_failures(&report).is_empty());
        report.failed("secret.rotation", "no function", "attach one");
        assert!(!blocking_failures(&report).is_empty(), "with no target check, the report must pass");
        report.passed("credential.current", "logs in");
        assert!(blocking_failures(&report).is_empty(), "a passed login check decides");
        report.failed("target.tls", "bad certificate", "fix it");
        assert!(!blocking_failures(&report).is_empty());
    }
}
