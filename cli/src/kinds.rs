//! The kinds of rotation, built as the functions build them, from the same variables.

use std::marker::PhantomData;

use rotation::check::Report;
use rotation::{
    DatabaseRotation, DatabaseSecret, Error, ExposeSecret, Login, Rotation, SecretStore, SecretsManager, Settings,
    Target, stage,
};

/// One kind of rotation: how the function builds it, and how to prove that `AWSCURRENT` works.
pub trait Kind {
    type R: Rotation;

    fn build() -> Result<Self::R, Error>;

    /// Appends `current.login` (a login with the `AWSCURRENT` credentials) to `report`, for
    /// kinds that have a login. For reports the engine's preflight does not yet prove this in.
    async fn current_login(store: &SecretsManager, secret_id: &str, report: &mut Report) {
        let _ = (store, secret_id, report);
    }
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

    async fn current_login(store: &SecretsManager, secret_id: &str, report: &mut Report) {
        const NAME: &str = "current.login";
        let text = match store.get_value(secret_id, None, stage::CURRENT).await {
            Ok(Some(text)) => text,
            Ok(None) => {
                report.failed(NAME, "the secret has no AWSCURRENT value", "store the credentials in the secret");
                return;
            }
            Err(error) => {
                report.failed(
                    NAME,
                    format!("cannot read the AWSCURRENT value: {error}"),
                    "allow secretsmanager:GetSecretValue on the secret",
                );
                return;
            }
        };
        let secret = match DatabaseSecret::parse(&text, &T::ENGINE) {
            Ok(secret) => secret,
            Err(problem) => {
                report.failed(
                    NAME,
                    format!("the AWSCURRENT value is invalid: {problem}"),
                    "correct the AWSCURRENT value of the secret",
                );
                return;
            }
        };
        let settings = match Settings::from_env(&T::ENGINE) {
            Ok(settings) => settings,
            Err(error) => {
                report.failed(NAME, error.to_string(), "correct the variable");
                return;
            }
        };
        let target = T::new(settings.connect);
        let account = format!("{} on {}:{}", secret.username, secret.host, secret.port);
        match target.connect(&secret).await {
            Ok(Login::Accepted(connection)) => {
                target.close(connection).await;
                report.passed(NAME, format!("the AWSCURRENT password of {account} logs in"));
            }
            Ok(Login::Rejected) => report.failed(
                NAME,
                format!(
                    "the AWSCURRENT password ({} characters) of {account} is rejected",
                    secret.password.expose_secret().chars().count()
                ),
                "if a rotation was interrupted after setSecret, finish it (`rotation resume`); else set the \
                 user's password to the AWSCURRENT value",
            ),
            Err(error) => report.failed(NAME, error.to_string(), "make the database reachable from here"),
        }
    }
}

pub struct ApiKey;

impl Kind for ApiKey {
    type R = api_key_rotation::ApiKeyRotation;

    fn build() -> Result<Self::R, Error> {
        api_key_rotation::ApiKeyRotation::from_env()
    }
}

/// Whether a report proves that the target accepts `AWSCURRENT`: no failed check named
/// `target.*` or `current.*`, or, when it has none of those that ran, no failed check at all.
pub fn proves_current(report: &Report) -> bool {
    use rotation::check::Status;
    let relevant: Vec<_> = report
        .checks
        .iter()
        .filter(|c| (c.name.starts_with("target.") || c.name.starts_with("current.")) && c.status != Status::Skipped)
        .collect();
    if relevant.is_empty() { report.passed } else { relevant.iter().all(|c| c.status != Status::Failed) }
}

/// Whether the engine's preflight already tried the current credentials.
pub fn has_login_check(report: &Report) -> bool {
    report.checks.iter().any(|c| c.name.starts_with("target.login") || c.name.starts_with("current."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_and_current_checks_decide_else_the_whole_report() {
        let mut report = Report::new("s", "PostgreSQL");
        report.passed("secret.describe", "ok");
        assert!(proves_current(&report));
        report.failed("secret.rotation", "no function", "attach one");
        assert!(!proves_current(&report), "with no target check, the report must pass");
        report.passed("current.login", "logs in");
        assert!(proves_current(&report), "a passed login check decides");
        report.failed("target.tls", "bad certificate", "fix it");
        assert!(!proves_current(&report));
    }
}
