use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tracing::{Instrument, error, info, info_span};

use crate::{
    DatabaseSecret, Error, Login, RotationEvent, SecretProblem, SecretStore, SecretVersions, Settings, Step, Strategy,
    Target, alternate_username, main_username, stage,
};

/// How long `testSecret` keeps trying a rejected pending password of the `admin-api` strategy:
/// the management API applies a change asynchronously, so a rejection may only mean "not yet".
const ADMIN_API_SETTLE: Duration = Duration::from_secs(30);

/// The four rotation steps, written once for every target.
pub struct Rotator<S, T> {
    store: S,
    target: T,
    settings: Settings,
}

/// What the guard found before a step.
enum Guard {
    /// The token is already `AWSCURRENT`: the rotation is complete.
    AlreadyCurrent(SecretVersions),
    /// The token is `AWSPENDING`: the step has work to do.
    Pending(SecretVersions),
}

impl<S: SecretStore, T: Target> Rotator<S, T> {
    pub fn new(store: S, target: T, settings: Settings) -> Self {
        Rotator { store, target, settings }
    }

    /// Runs the step an event asks for, with one log span around it.
    pub async fn handle(&self, event: serde_json::Value) -> Result<(), Error> {
        let started = Instant::now();
        let event = match RotationEvent::from_json(event) {
            Ok(event) => event,
            Err(e) => {
                error!(error = %e, error_type = %e.error_type(), "rejected the rotation event");
                return Err(e);
            }
        };
        let span = info_span!(
            "rotation_step",
            secret_id = %event.secret_id,
            token = %event.token,
            step = %event.step,
            engine = T::ENGINE.label,
        );
        async {
            let result = match crate::deadline::remaining() {
                // The last word before Lambda's own "Task timed out", which names nothing.
                Some(left) => tokio::time::timeout(left, self.run_step(&event))
                    .await
                    .unwrap_or_else(|_| Err(Error::OutOfTime { step: event.step.to_string() })),
                None => self.run_step(&event).await,
            };
            let duration_ms = started.elapsed().as_millis() as u64;
            crate::metrics::emit(&crate::metrics::StepRecord {
                step: &event.step.to_string(),
                secret_id: &event.secret_id,
                engine: T::ENGINE.label,
                duration_ms,
                error_type: result.as_ref().err().map(Error::error_type),
            });
            match &result {
                Ok(()) => info!(duration_ms, outcome = "success", "step finished"),
                Err(e) => error!(
                    duration_ms,
                    outcome = "failure",
                    error_type = %e.error_type(),
                    error = %e,
                    "step failed"
                ),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// The guard, then the step.
    pub async fn run_step(&self, event: &RotationEvent) -> Result<(), Error> {
        match self.guard(event).await? {
            Guard::AlreadyCurrent(versions) => {
                if event.step == Step::Finish {
                    self.remove_leftover_pending(event, &versions).await?;
                }
                info!("the token is already AWSCURRENT: nothing to do");
                Ok(())
            }
            Guard::Pending(versions) => match event.step {
                Step::Create => self.create_secret(event).await,
                Step::Set => self.set_secret(event).await,
                Step::Test => self.test_secret(event).await,
                Step::Finish => self.finish_secret(event, &versions).await,
            },
        }
    }

    /// The checks AWS's templates make before every step.
    async fn guard(&self, event: &RotationEvent) -> Result<Guard, Error> {
        let versions = self.store.describe(&event.secret_id).await?;
        if !versions.rotation_enabled {
            return Err(Error::RotationDisabled { secret: event.secret_id.clone() });
        }
        let Some(labels) = versions.stages.get(&event.token) else {
            return Err(Error::UnknownVersion { secret: event.secret_id.clone(), token: event.token.clone() });
        };
        if versions.has_stage(&event.token, stage::CURRENT) {
            return Ok(Guard::AlreadyCurrent(versions));
        }
        if !versions.has_stage(&event.token, stage::PENDING) {
            let stages = if labels.is_empty() { "none".to_owned() } else { labels.join(", ") };
            return Err(Error::NotPending { secret: event.secret_id.clone(), token: event.token.clone(), stages });
        }
        Ok(Guard::Pending(versions))
    }

    /// Stores a new version, staged `AWSPENDING`, with a new password (and, for alternating
    /// users, the other user's name) and every other field of the current version.
    async fn create_secret(&self, event: &RotationEvent) -> Result<(), Error> {
        let current = self.load(event, stage::CURRENT).await?;
        let strategy = self.strategy(&current);
        // Checked now, so a broken master secret or a server without dual passwords stops the
        // rotation before a pending version exists to block the next one.
        if strategy == Strategy::AlternatingUsers
            && let Some(masterarn) = &current.masterarn
            && same_secret(masterarn, &event.secret_id)
        {
            return Err(self.invalid_current(
                event,
                "masterarn",
                "names this secret itself: alternating users need the secret of another user that may \
                 change passwords",
            ));
        }
        if strategy.needs_master() {
            let master = self.load_master(event, &current, strategy).await?;
            if strategy == Strategy::AlternatingUsers
                && (master.username == current.username || master.username == alternate_username(&current.username))
            {
                return Err(self.invalid_current(
                    event,
                    "masterarn",
                    "names a secret of the user being rotated (or of its alternate): alternating users need \
                     the secret of another user that may change passwords",
                ));
            }
        }
        if strategy == Strategy::DualPassword {
            let mut connection = self.login_as_current_or_previous(event, &current).await?;
            let supported = self.target.check_dual_password_support(&mut connection, &current).await;
            self.target.close(connection).await;
            supported?;
        }
        if strategy == Strategy::AdminApi {
            self.target.check_admin_api(&current)?;
        }
        if self.store.get_value(&event.secret_id, Some(&event.token), stage::PENDING).await?.is_some() {
            info!("a pending value for this token exists already");
            return Ok(());
        }
        let username = match strategy {
            Strategy::AlternatingUsers => self.alternate_name(&current.username)?,
            _ => current.username.clone(),
        };
        let password = self.store.random_password(&self.settings.policy).await?;
        self.target.check_new_password(&current, &password)?;
        let pending = current.with_credentials(&username, &password);
        self.put_pending_verified(event, &pending).await?;
        info!(%strategy, "stored the pending version");
        Ok(())
    }

    /// The other user of an alternating pair, if the engine and `USERNAME_CHARACTER_LIMIT`
    /// allow a name that long.
    fn alternate_name(&self, username: &str) -> Result<String, Error> {
        let name = alternate_username(username);
        if name.len() > T::MAX_USERNAME_BYTES {
            return Err(Error::AlternateNameTooLong {
                length: format!("{} bytes", name.len()),
                name,
                limit: format!("{} allows {}", T::ENGINE.label, T::MAX_USERNAME_BYTES),
            });
        }
        if let Some(limit) = self.settings.username_character_limit
            && name.chars().count() > limit
        {
            return Err(Error::AlternateNameTooLong {
                length: format!("{} characters", name.chars().count()),
                name,
                limit: format!("USERNAME_CHARACTER_LIMIT allows {limit}"),
            });
        }
        Ok(name)
    }

    /// Changes the password on the target to the pending one.
    async fn set_secret(&self, event: &RotationEvent) -> Result<(), Error> {
        let pending = match self.load(event, stage::PENDING).await {
            Err(error @ Error::InvalidSecret { .. }) => {
                return Err(self.stale_pending(event, error, "no step can use it, so nothing was changed for it"));
            }
            other => other?,
        };
        let current = self.load(event, stage::CURRENT).await?;
        let strategy = self.strategy(&current);
        let mismatch = match strategy {
            Strategy::SingleUser | Strategy::SingleUserWithMaster | Strategy::DualPassword | Strategy::AdminApi => {
                (!pending.same_account(&current))
                    .then(|| Error::UserMismatch { current: current.account(), pending: pending.account() })
            }
            Strategy::AlternatingUsers => {
                let expected = alternate_username(&current.username);
                (pending.username != expected || !pending.same_server(&current)).then(|| Error::NotAlternating {
                    current: current.account(),
                    pending: pending.account(),
                    expected: format!(
                        "{}@{}:{}",
                        crate::error::shown(&expected),
                        crate::error::shown(&current.host),
                        current.port
                    ),
                })
            }
        };
        if let Some(error) = mismatch {
            return Err(self.inconsistent_pending(event, &current, &pending, error).await);
        }
        // Checked after the users are: a pending secret may only name the user it should.
        if let Login::Accepted(connection) = self.target.connect(&pending).await? {
            self.target.close(connection).await;
            info!("the pending password logs in already");
            return Ok(());
        }
        let mut connection = match strategy {
            Strategy::AdminApi => {
                // No database session: the service's API changes the password.
                self.target.set_password_by_api(&pending, &pending.password).await?;
                info!(user = %pending.username, host = %pending.host, %strategy, "set the pending password");
                return Ok(());
            }
            Strategy::SingleUser | Strategy::DualPassword => {
                match self.login_as_current_or_previous(event, &current).await {
                    Ok(connection) => connection,
                    Err(error @ Error::NoWorkingCredentials { .. }) => {
                        // Another invocation of this step may have just changed the password.
                        if let Login::Accepted(connection) = self.target.connect(&pending).await? {
                            self.target.close(connection).await;
                            info!("current and previous passwords are rejected but the pending one logs in now");
                            return Ok(());
                        }
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                }
            }
            Strategy::SingleUserWithMaster => self.login_as_master(event, &current, strategy).await?,
            Strategy::AlternatingUsers => {
                match self.target.connect(&current).await? {
                    Login::Accepted(connection) => self.target.close(connection).await,
                    Login::Rejected => return Err(Error::CurrentRejected { account: current.account() }),
                }
                self.login_as_master(event, &current, strategy).await?
            }
        };
        let result = match strategy {
            Strategy::AlternatingUsers => {
                self.target.prepare_alternate_user(&mut connection, main_username(&pending.username), &pending).await
            }
            Strategy::DualPassword => {
                self.target.set_password_retaining_old(&mut connection, &pending, &pending.password).await
            }
            Strategy::SingleUser | Strategy::SingleUserWithMaster | Strategy::AdminApi => {
                self.target.set_password(&mut connection, &pending, &pending.password).await
            }
        };
        self.target.close(connection).await;
        result?;
        info!(user = %pending.username, host = %pending.host, %strategy, "set the pending password");
        Ok(())
    }

    /// The strategy for a secret: see [`Strategy`].
    fn strategy(&self, secret: &DatabaseSecret) -> Strategy {
        Strategy::choose(secret.rotation_strategy, self.settings.strategy, secret.masterarn.is_some())
    }

    /// Reads and parses the master secret that `masterarn` names.
    async fn load_master(
        &self,
        event: &RotationEvent,
        user: &DatabaseSecret,
        strategy: Strategy,
    ) -> Result<DatabaseSecret, Error> {
        let Some(masterarn) = &user.masterarn else {
            return Err(Error::MasterArnMissing { secret: event.secret_id.clone(), strategy });
        };
        let master_error = |problem: String| Error::MasterSecret {
            secret: event.secret_id.clone(),
            masterarn: crate::error::shown(masterarn),
            problem,
        };
        let text = match self.store.get_value(masterarn, None, stage::CURRENT).await {
            Ok(Some(text)) => text,
            Ok(None) => {
                return Err(master_error("cannot be read: it does not exist or has no AWSCURRENT value".into()));
            }
            Err(Error::SecretsManager { detail, retryable: true, .. }) => {
                return Err(Error::SecretsManager {
                    operation: "GetSecretValue",
                    secret: masterarn.clone(),
                    detail,
                    retryable: true,
                });
            }
            Err(Error::SecretsManager { detail, .. }) => return Err(master_error(format!("cannot be read: {detail}"))),
            Err(other) => return Err(master_error(format!("cannot be read: {other}"))),
        };
        let master = DatabaseSecret::parse_master(&text, &T::ENGINE, user)
            .and_then(|master| master.check_username_bytes(T::MAX_USERNAME_BYTES).map(|()| master))
            .map_err(|problem| master_error(format!("is invalid: {problem}")))?;
        if !master.same_server(user) {
            return Err(master_error(format!(
                "is for {}:{}, not for {}:{}",
                master.host, master.port, user.host, user.port
            )));
        }
        Ok(master)
    }

    async fn login_as_master(
        &self,
        event: &RotationEvent,
        user: &DatabaseSecret,
        strategy: Strategy,
    ) -> Result<T::Connection, Error> {
        let master = self.load_master(event, user, strategy).await?;
        match self.target.connect(&master).await? {
            Login::Accepted(connection) => Ok(connection),
            Login::Rejected => Err(Error::MasterRejected { account: master.account() }),
        }
    }

    /// Logs in as `AWSCURRENT`, or as `AWSPREVIOUS` when the target rejects the current
    /// password (an earlier rotation changed it but did not finish).
    async fn login_as_current_or_previous(
        &self,
        event: &RotationEvent,
        current: &DatabaseSecret,
    ) -> Result<T::Connection, Error> {
        if let Login::Accepted(connection) = self.target.connect(current).await? {
            return Ok(connection);
        }
        info!("the AWSCURRENT password is rejected; trying AWSPREVIOUS");
        let no_working_credentials = || Error::NoWorkingCredentials {
            user: current.username.clone(),
            host: current.host.clone(),
            port: current.port,
        };
        let Some(previous) = self.load_optional(event, stage::PREVIOUS).await? else {
            return Err(no_working_credentials());
        };
        if !previous.same_account(current) {
            return Err(no_working_credentials());
        }
        match self.target.connect(&previous).await? {
            Login::Accepted(connection) => Ok(connection),
            Login::Rejected => Err(no_working_credentials()),
        }
    }

    /// Logs in with the pending password and runs the target's check. For a single user it
    /// also confirms the old password no longer works, so a rotation that changed nothing
    /// cannot pass.
    async fn test_secret(&self, event: &RotationEvent) -> Result<(), Error> {
        let pending = self.load(event, stage::PENDING).await?;
        let current = self.load(event, stage::CURRENT).await?;
        let strategy = self.strategy(&current);
        let mut connection = match self.connect_pending(&pending, strategy).await? {
            Login::Accepted(connection) => connection,
            Login::Rejected => {
                return Err(Error::PendingRejected {
                    user: pending.username.clone(),
                    host: pending.host.clone(),
                    port: pending.port,
                });
            }
        };
        let checked = match strategy {
            Strategy::AlternatingUsers => {
                self.target.check_alternate(&mut connection, main_username(&pending.username), &pending).await
            }
            _ => self.target.check(&mut connection, &pending).await,
        };
        self.target.close(connection).await;
        checked?;
        if matches!(strategy, Strategy::AlternatingUsers | Strategy::DualPassword) {
            // The credentials that were current keep working: that is the point of these strategies.
            info!(%strategy, "the pending credentials log in");
            return Ok(());
        }

        let password_changed = current.password.expose_secret() != pending.password.expose_secret();
        if !password_changed {
            // RotateSecret with RotateImmediately=false tests a copy of the current version.
            info!(
                "the pending password is the current one (a test without rotation): not checking that it is rejected"
            );
        }
        if current.same_account(&pending)
            && password_changed
            && let Login::Accepted(connection) = self.target.connect(&current).await?
        {
            self.target.close(connection).await;
            return Err(Error::OldPasswordStillAccepted {
                user: current.username.clone(),
                host: current.host.clone(),
                port: current.port,
            });
        }
        info!("the pending password works and the old one is rejected");
        Ok(())
    }

    /// Logs in with the pending credentials. For the `admin-api` strategy a rejection is tried
    /// again for up to [`ADMIN_API_SETTLE`] (less when the invocation ends sooner).
    async fn connect_pending(
        &self,
        pending: &DatabaseSecret,
        strategy: Strategy,
    ) -> Result<Login<T::Connection>, Error> {
        let login = self.target.connect(pending).await?;
        if strategy != Strategy::AdminApi || matches!(login, Login::Accepted(_)) {
            return Ok(login);
        }
        let until = Instant::now() + crate::deadline::bound(ADMIN_API_SETTLE);
        loop {
            let pause = Duration::from_secs(1).min(until.saturating_duration_since(Instant::now()));
            if pause.is_zero() {
                return Ok(Login::Rejected);
            }
            info!("the pending password is not in effect yet; trying again");
            tokio::time::sleep(pause).await;
            if let Login::Accepted(connection) = self.target.connect(pending).await? {
                return Ok(Login::Accepted(connection));
            }
        }
    }

    /// Makes the token `AWSCURRENT` and takes `AWSPENDING` off it.
    /// `versions` is what the guard read just before.
    async fn finish_secret(&self, event: &RotationEvent, versions: &SecretVersions) -> Result<(), Error> {
        let current_version = versions.version_with(stage::CURRENT).map(str::to_owned);
        if current_version.as_deref() != Some(event.token.as_str()) {
            let moved = self
                .store
                .move_stage(&event.secret_id, stage::CURRENT, Some(&event.token), current_version.as_deref())
                .await;
            self.verify_write(event, moved, stage::CURRENT, true).await?;
            info!(previous_version = current_version.as_deref().unwrap_or("none"), "moved AWSCURRENT to the token");
        }
        let removed = self.store.move_stage(&event.secret_id, stage::PENDING, None, Some(&event.token)).await;
        self.verify_write(event, removed, stage::PENDING, false).await
    }

    /// Secrets Manager removes `AWSPENDING` itself after a rotation, emulators do not, and a
    /// label left on a finished version blocks the next rotation.
    async fn remove_leftover_pending(&self, event: &RotationEvent, versions: &SecretVersions) -> Result<(), Error> {
        if versions.has_stage(&event.token, stage::PENDING) {
            let removed = self.store.move_stage(&event.secret_id, stage::PENDING, None, Some(&event.token)).await;
            self.verify_write(event, removed, stage::PENDING, false).await?;
            info!("removed AWSPENDING from the current version");
        }
        Ok(())
    }

    /// `PutSecretValue` of the pending version, verified: when the call fails (or its answer
    /// was lost) but the token's version holds a pending value, stored by this call or by another
    /// invocation of the same step, the step goes on with it.
    async fn put_pending_verified(&self, event: &RotationEvent, pending: &SecretString) -> Result<(), Error> {
        let stored =
            self.store.put_pending(&event.secret_id, &event.token, pending, event.rotation_token.as_ref()).await;
        let Err(error) = stored else {
            return Ok(());
        };
        match self.store.get_value(&event.secret_id, Some(&event.token), stage::PENDING).await {
            Ok(Some(_)) => {
                info!(error = %error, "PutSecretValue reported a failure, but the pending value is stored: going on");
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// A stage move, verified: when it failed (or its answer was lost), reads the stages back;
    /// if the token's version holds `label` (`attached`) or not (`!attached`) as the move meant,
    /// this call or another invocation made it, and the step goes on.
    async fn verify_write(
        &self,
        event: &RotationEvent,
        result: Result<(), Error>,
        label: &str,
        attached: bool,
    ) -> Result<(), Error> {
        let Err(error) = result else {
            return Ok(());
        };
        match self.store.describe(&event.secret_id).await {
            Ok(versions) if versions.has_stage(&event.token, label) == attached => {
                info!(
                    error = %error,
                    label,
                    attached,
                    "UpdateSecretVersionStage reported a failure, but the stage is where it should be: going on"
                );
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// The error for a pending version that can no longer succeed, with the way out: remove its
    /// `AWSPENDING` label. `why` says what is known about the target.
    fn stale_pending(&self, event: &RotationEvent, error: Error, why: &str) -> Error {
        Error::StalePending {
            inner: Box::new(error),
            secret: crate::error::shown(&event.secret_id),
            token: crate::error::shown(&event.token),
            why: why.to_owned(),
        }
    }

    /// A pending version inconsistent with the current one: never acted on. When its password
    /// does not log in, nothing was changed for it and the error gives the way out.
    async fn inconsistent_pending(
        &self,
        event: &RotationEvent,
        current: &DatabaseSecret,
        pending: &DatabaseSecret,
        error: Error,
    ) -> Error {
        if !pending.same_server(current) {
            return self.stale_pending(event, error, "it names another server than AWSCURRENT");
        }
        match self.target.connect(pending).await {
            Ok(Login::Rejected) => self.stale_pending(
                event,
                error,
                "its password does not log in, so nothing was changed on the server for it",
            ),
            Ok(Login::Accepted(connection)) => {
                self.target.close(connection).await;
                error
            }
            Err(_) => error,
        }
    }

    fn invalid_current(&self, event: &RotationEvent, field: &'static str, rule: &str) -> Error {
        Error::InvalidSecret {
            secret: event.secret_id.clone(),
            stage: stage::CURRENT.to_owned(),
            problem: SecretProblem::Rule { field, rule: rule.to_owned() },
        }
    }

    async fn load(&self, event: &RotationEvent, label: &str) -> Result<DatabaseSecret, Error> {
        self.load_optional(event, label).await?.ok_or_else(|| Error::MissingValue {
            secret: event.secret_id.clone(),
            stage: if label == stage::PENDING {
                format!("{label} for version {}", event.token)
            } else {
                label.to_owned()
            },
        })
    }

    async fn load_optional(&self, event: &RotationEvent, label: &str) -> Result<Option<DatabaseSecret>, Error> {
        let version = (label == stage::PENDING).then_some(event.token.as_str());
        let Some(text): Option<SecretString> = self.store.get_value(&event.secret_id, version, label).await? else {
            return Ok(None);
        };
        DatabaseSecret::parse(&text, &T::ENGINE)
            .and_then(|secret| secret.check_username_bytes(T::MAX_USERNAME_BYTES).map(|()| secret))
            .map(Some)
            .map_err(|problem| Error::InvalidSecret {
                secret: event.secret_id.clone(),
                stage: label.to_owned(),
                problem,
            })
    }
}

/// Whether two ids (each an ARN or a name) name the same secret. An ARN ends in the secret's
/// name, a dash and six random characters.
fn same_secret(a: &str, b: &str) -> bool {
    fn name_of(id: &str) -> (&str, bool) {
        match id.rsplit_once(":secret:") {
            Some((_, suffix)) if id.starts_with("arn:") => (suffix, true),
            _ => (id, false),
        }
    }
    let ((a, a_arn), (b, b_arn)) = (name_of(a), name_of(b));
    let arn_names = |suffix: &str, name: &str| {
        suffix.len() == name.len() + 7 && suffix.starts_with(name) && suffix.as_bytes()[name.len()] == b'-'
    };
    match (a_arn, b_arn) {
        (true, false) => a == b || arn_names(a, b),
        (false, true) => a == b || arn_names(b, a),
        _ => a == b,
    }
}
