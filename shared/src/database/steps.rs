use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tracing::info;

use crate::check::Report;
use crate::engine::{CheckContext, Rotation, StepContext};
use crate::{
    DatabaseSecret, Error, Login, SecretProblem, SecretStore, Settings, Strategy, Target, alternate_username,
    main_username, stage,
};

/// How long `testSecret` keeps trying a rejected pending password of the `admin-api` strategy:
/// the management API applies a change asynchronously, so a rejection may only mean "not yet".
const ADMIN_API_SETTLE: Duration = Duration::from_secs(30);

/// The rotation of a database user's password: the secret format, the strategies (single user,
/// alternating users, dual passwords, admin API) and the credential cascade, over a [`Target`].
pub struct DatabaseRotation<T> {
    pub(super) target: T,
    pub(super) settings: Settings,
}

impl<T: Target> Rotation for DatabaseRotation<T> {
    const LABEL: &'static str = T::ENGINE.label;

    async fn create_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        self.create(step).await
    }

    async fn set_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        self.set(step).await
    }

    async fn test_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        self.test(step).await
    }

    async fn check<S: SecretStore>(&self, secret: &CheckContext<'_, S>, report: &mut Report) {
        self.preflight(secret, report).await
    }
}

impl<T: Target> DatabaseRotation<T> {
    pub fn new(target: T, settings: Settings) -> Self {
        DatabaseRotation { target, settings }
    }

    /// Stores a new version, staged `AWSPENDING`, with a new password (and, for alternating
    /// users, the other user's name) and every other field of the current version.
    async fn create<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let current = self.load(step, stage::CURRENT).await?;
        let strategy = self.strategy(&current);
        // Checked now, so a broken master secret or a server without dual passwords stops the
        // rotation before a pending version exists to block the next one.
        if strategy == Strategy::AlternatingUsers
            && let Some(masterarn) = &current.masterarn
            && same_secret(masterarn, &step.event.secret_id)
        {
            return Err(self.invalid_current(
                step,
                "masterarn",
                "names this secret itself: alternating users need the secret of another user that may \
                 change passwords",
            ));
        }
        if strategy.needs_master() {
            let master = self.load_master(step, &current, strategy).await?;
            if strategy == Strategy::AlternatingUsers
                && (master.username == current.username || master.username == alternate_username(&current.username))
            {
                return Err(self.invalid_current(
                    step,
                    "masterarn",
                    "names a secret of the user being rotated (or of its alternate): alternating users need \
                     the secret of another user that may change passwords",
                ));
            }
        }
        if strategy == Strategy::DualPassword {
            let mut connection = self.login_as_current_or_previous(step, &current).await?;
            let supported = self.target.check_dual_password_support(&mut connection, &current).await;
            self.target.close(connection).await;
            supported?;
        }
        if strategy == Strategy::AdminApi {
            self.target.check_admin_api(&current)?;
        }
        if step.store.get_value(&step.event.secret_id, Some(&step.event.token), stage::PENDING).await?.is_some() {
            info!("a pending value for this token exists already");
            return Ok(());
        }
        let username = match strategy {
            Strategy::AlternatingUsers => self.alternate_name(&current.username)?,
            _ => current.username.clone(),
        };
        let password = step.store.random_password(&self.settings.policy).await?;
        self.target.check_new_password(&current, &password)?;
        let pending = current.with_credentials(&username, &password);
        step.put_pending(&pending).await?;
        info!(%strategy, "stored the pending version");
        Ok(())
    }

    /// The other user of an alternating pair, if the engine and `USERNAME_CHARACTER_LIMIT`
    /// allow a name that long.
    pub(super) fn alternate_name(&self, username: &str) -> Result<String, Error> {
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
    async fn set<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let pending = match self.load(step, stage::PENDING).await {
            Err(error @ Error::InvalidSecret { .. }) => {
                return Err(step.stale_pending(error, "no step can use it, so nothing was changed for it"));
            }
            other => other?,
        };
        let current = self.load(step, stage::CURRENT).await?;
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
            return Err(self.inconsistent_pending(step, &current, &pending, error).await);
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
                match self.login_as_current_or_previous(step, &current).await {
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
            Strategy::SingleUserWithMaster => self.login_as_master(step, &current, strategy).await?,
            Strategy::AlternatingUsers => {
                match self.target.connect(&current).await? {
                    Login::Accepted(connection) => self.target.close(connection).await,
                    Login::Rejected => return Err(Error::CurrentRejected { account: current.account() }),
                }
                self.login_as_master(step, &current, strategy).await?
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
    pub(super) fn strategy(&self, secret: &DatabaseSecret) -> Strategy {
        Strategy::choose(secret.rotation_strategy, self.settings.strategy, secret.masterarn.is_some())
    }

    /// Reads and parses the master secret that `masterarn` names.
    async fn load_master<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        user: &DatabaseSecret,
        strategy: Strategy,
    ) -> Result<DatabaseSecret, Error> {
        self.load_master_of(step.store, &step.event.secret_id, user, strategy).await
    }

    /// [`Self::load_master`] for the secret `secret_id` (the user's secret).
    pub(super) async fn load_master_of<S: SecretStore>(
        &self,
        store: &S,
        secret_id: &str,
        user: &DatabaseSecret,
        strategy: Strategy,
    ) -> Result<DatabaseSecret, Error> {
        let Some(masterarn) = &user.masterarn else {
            return Err(Error::MasterArnMissing { secret: secret_id.to_owned(), strategy });
        };
        let master_error = |problem: String| Error::MasterSecret {
            secret: secret_id.to_owned(),
            masterarn: crate::error::shown(masterarn),
            problem,
        };
        let text = match store.get_value(masterarn, None, stage::CURRENT).await {
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

    async fn login_as_master<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        user: &DatabaseSecret,
        strategy: Strategy,
    ) -> Result<T::Connection, Error> {
        let master = self.load_master(step, user, strategy).await?;
        match self.target.connect(&master).await? {
            Login::Accepted(connection) => Ok(connection),
            Login::Rejected => Err(Error::MasterRejected { account: master.account() }),
        }
    }

    /// Logs in as `AWSCURRENT`, or as `AWSPREVIOUS` when the target rejects the current
    /// password (an earlier rotation changed it but did not finish).
    async fn login_as_current_or_previous<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
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
        let Some(previous) = self.load_optional(step, stage::PREVIOUS).await? else {
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
    async fn test<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let pending = self.load(step, stage::PENDING).await?;
        let current = self.load(step, stage::CURRENT).await?;
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

    /// A pending version inconsistent with the current one: never acted on. When its password
    /// does not log in, nothing was changed for it and the error gives the way out.
    async fn inconsistent_pending<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        current: &DatabaseSecret,
        pending: &DatabaseSecret,
        error: Error,
    ) -> Error {
        if !pending.same_server(current) {
            return step.stale_pending(error, "it names another server than AWSCURRENT");
        }
        match self.target.connect(pending).await {
            Ok(Login::Rejected) => {
                step.stale_pending(error, "its password does not log in, so nothing was changed on the server for it")
            }
            Ok(Login::Accepted(connection)) => {
                self.target.close(connection).await;
                error
            }
            Err(_) => error,
        }
    }

    fn invalid_current<S: SecretStore>(&self, step: &StepContext<'_, S>, field: &'static str, rule: &str) -> Error {
        Error::InvalidSecret {
            secret: step.event.secret_id.clone(),
            stage: stage::CURRENT.to_owned(),
            problem: SecretProblem::Rule { field, rule: rule.to_owned() },
        }
    }

    async fn load<S: SecretStore>(&self, step: &StepContext<'_, S>, label: &str) -> Result<DatabaseSecret, Error> {
        self.load_optional(step, label).await?.ok_or_else(|| Error::MissingValue {
            secret: step.event.secret_id.clone(),
            stage: if label == stage::PENDING {
                format!("{label} for version {}", step.event.token)
            } else {
                label.to_owned()
            },
        })
    }

    async fn load_optional<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        label: &str,
    ) -> Result<Option<DatabaseSecret>, Error> {
        let version = (label == stage::PENDING).then_some(step.event.token.as_str());
        let Some(text): Option<SecretString> = step.store.get_value(&step.event.secret_id, version, label).await?
        else {
            return Ok(None);
        };
        DatabaseSecret::parse(&text, &T::ENGINE)
            .and_then(|secret| secret.check_username_bytes(T::MAX_USERNAME_BYTES).map(|()| secret))
            .map(Some)
            .map_err(|problem| Error::InvalidSecret {
                secret: step.event.secret_id.clone(),
                stage: label.to_owned(),
                problem,
            })
    }
}

/// Whether two ids (each an ARN or a name) name the same secret. An ARN ends in the secret's
/// name, a dash and six random characters.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
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
