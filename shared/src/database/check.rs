//! The preflight check of a database secret: read-only, it logs in and asks Secrets Manager for
//! a random password (which changes nothing), and never changes a password or stores a value.

use crate::check::Report;
use crate::engine::{CheckContext, secrets_manager_fix};
use crate::error::shown;
use crate::{DatabaseRotation, DatabaseSecret, Error, Login, SecretStore, Strategy, Target, TlsMode, stage};

use super::steps::same_secret;

impl<T: Target> DatabaseRotation<T> {
    /// The checks of [`crate::Rotation::check`] for a database secret, appended to `report`.
    pub(super) async fn preflight<S: SecretStore>(&self, secret: &CheckContext<'_, S>, report: &mut Report) {
        let Some(current) = self.check_parses(secret, report).await else {
            return;
        };
        let strategy = self.strategy(&current);
        report.passed("secret.strategy", format!("{strategy}: {}", self.why_strategy(&current, strategy)));
        self.check_secret_rules(secret, &current, strategy, report);

        let connection = self.check_login(secret, &current, strategy, report).await;
        match (strategy, connection) {
            (Strategy::DualPassword, Some(mut connection)) => {
                match self.target.check_dual_password_support(&mut connection, &current).await {
                    Ok(()) => report.passed("target.dual_password", "the server keeps two passwords of one user"),
                    Err(error) => report.failed(
                        "target.dual_password",
                        error.to_string(),
                        "use another strategy (single-user or alternating-users), or a server with dual passwords \
                         (MySQL 8.0.14+, Aurora MySQL 3) and grant the user APPLICATION_PASSWORD_ADMIN",
                    ),
                }
                self.target.close(connection).await;
            }
            (Strategy::DualPassword, None) => {
                report.skipped("target.dual_password", "needs a session with the current credentials")
            }
            (_, Some(connection)) => self.target.close(connection).await,
            (_, None) => {}
        }
        if strategy == Strategy::AdminApi {
            match self.target.check_admin_api(&current) {
                Ok(()) => report.passed("target.admin_api", "the secret names what the admin API needs"),
                Err(error) => report.failed(
                    "target.admin_api",
                    error.to_string(),
                    "add dbClusterIdentifier or namespaceName to AWSCURRENT, or use another strategy",
                ),
            }
        }
        if strategy.needs_master() {
            self.check_master(secret, &current, strategy, report).await;
        } else {
            report.skipped("master.secret", format!("{strategy} uses no master secret"));
        }
        self.check_password_policy(secret, &current, report).await;
        report.skipped(
            "target.privileges",
            "whether the user (or the master) may change the password is not checked: only a password change \
             proves it, and a check changes nothing; setSecret reports a refusal with the statement to run",
        );
    }

    /// `secret.parses`: the `AWSCURRENT` value is a secret of this engine.
    async fn check_parses<S: SecretStore>(
        &self,
        secret: &CheckContext<'_, S>,
        report: &mut Report,
    ) -> Option<DatabaseSecret> {
        let text = match secret.store.get_value(secret.secret_id, None, stage::CURRENT).await {
            Ok(Some(text)) => text,
            Ok(None) => {
                report.skipped("secret.parses", "the secret has no AWSCURRENT value");
                return None;
            }
            Err(error) => {
                report.skipped("secret.parses", format!("the AWSCURRENT value cannot be read: {error}"));
                return None;
            }
        };
        let parsed = DatabaseSecret::parse(&text, &T::ENGINE)
            .and_then(|parsed| parsed.check_username_bytes(T::MAX_USERNAME_BYTES).map(|()| parsed));
        match parsed {
            Ok(parsed) => {
                report.passed(
                    "secret.parses",
                    format!(
                        "AWSCURRENT is a {} secret for {} (database {}, TLS {})",
                        T::ENGINE.label,
                        parsed.account(),
                        parsed.dbname.as_deref().map(shown).unwrap_or_else(|| "none".into()),
                        tls_name(parsed.tls)
                    ),
                );
                Some(parsed)
            }
            Err(problem) => {
                report.failed(
                    "secret.parses",
                    format!("the AWSCURRENT value is invalid: {problem}"),
                    "correct the AWSCURRENT value (README, The secret: the fields and their rules) with \
                     `aws secretsmanager put-secret-value`",
                );
                None
            }
        }
    }

    /// Why the strategy is this one: the rule of [`Strategy::choose`].
    fn why_strategy(&self, current: &DatabaseSecret, strategy: Strategy) -> String {
        if current.rotation_strategy.is_some() {
            "the secret's rotation_strategy field names it".into()
        } else if self.settings.strategy.is_some() {
            "the secret names none; the function's ROTATION_STRATEGY variable names it".into()
        } else if strategy == Strategy::AlternatingUsers {
            "the secret names none, nor does ROTATION_STRATEGY, and it has a masterarn (AWS's multi-user template)"
                .into()
        } else {
            "the secret names none, nor does ROTATION_STRATEGY, and it has no masterarn".into()
        }
    }

    /// The rules `createSecret` checks before it stores anything, beyond the parse.
    fn check_secret_rules<S: SecretStore>(
        &self,
        secret: &CheckContext<'_, S>,
        current: &DatabaseSecret,
        strategy: Strategy,
        report: &mut Report,
    ) {
        if strategy.needs_master() && current.masterarn.is_none() {
            report.failed(
                "secret.masterarn",
                Error::MasterArnMissing { secret: shown(secret.secret_id), strategy }.to_string(),
                "add field `masterarn` (the ARN of a secret of a user that may change passwords) to AWSCURRENT",
            );
        } else if strategy == Strategy::AlternatingUsers
            && let Some(masterarn) = &current.masterarn
            && same_secret(masterarn, secret.secret_id)
        {
            report.failed(
                "secret.masterarn",
                "field `masterarn` names this secret itself",
                "point `masterarn` at the secret of another user that may change passwords",
            );
        }
        if strategy == Strategy::AlternatingUsers {
            match self.alternate_name(&current.username) {
                Ok(name) => report.passed("secret.alternate_name", format!("the alternate user is {}", shown(&name))),
                Err(error) => report.failed(
                    "secret.alternate_name",
                    error.to_string(),
                    "use a shorter user name, or raise USERNAME_CHARACTER_LIMIT if the engine allows longer names",
                ),
            }
        }
    }

    /// `target.reachable`, `target.tls`, `credential.current`: a login with the current
    /// credentials. The session, when one opened, for the checks that need one.
    async fn check_login<S: SecretStore>(
        &self,
        secret: &CheckContext<'_, S>,
        current: &DatabaseSecret,
        strategy: Strategy,
        report: &mut Report,
    ) -> Option<T::Connection> {
        let server = format!("{}:{}", shown(&current.host), current.port);
        let timeout = self.settings.connect.timeout.as_secs();
        match self.target.connect(current).await {
            Ok(login) => {
                report.passed("target.reachable", format!("{server} answers within {timeout} s"));
                self.report_tls(current, &server, report);
                match login {
                    Login::Accepted(connection) => {
                        report.passed(
                            "credential.current",
                            format!("the AWSCURRENT password of {} logs in", current.account()),
                        );
                        Some(connection)
                    }
                    Login::Rejected => {
                        let mut detail = format!("the AWSCURRENT password of {} is rejected", current.account());
                        if matches!(strategy, Strategy::SingleUser | Strategy::DualPassword)
                            && self.previous_logs_in(secret, current).await
                        {
                            detail.push_str(
                                "; the AWSPREVIOUS one logs in (an earlier rotation changed the password but did \
                                 not finish: its setSecret recovers)",
                            );
                        }
                        report.failed(
                            "credential.current",
                            detail,
                            "correct the AWSCURRENT value: store the password the user logs in with \
                             (`aws secretsmanager put-secret-value`), or set it on the server",
                        );
                        None
                    }
                }
            }
            Err(error @ Error::Tls { .. }) => {
                report.passed("target.reachable", format!("{server} answers (the TLS handshake started)"));
                report.failed(
                    "target.tls",
                    error.to_string(),
                    "if the server's certificate is from a private CA, ship the CA in a PEM file and set \
                     CA_BUNDLE_PATH; if the certificate names another host, use that host in `host`; \
                     `sslmode: verify-ca` skips the name check, `require` the whole verification",
                );
                report.skipped("credential.current", "no session: TLS failed");
                None
            }
            Err(error) => {
                report.failed(
                    "target.reachable",
                    format!("{error} (connect timeout {timeout} s)"),
                    "check the function's VPC, subnets and security groups (the database's must allow the \
                     function's on this port), the host name's DNS from inside the VPC, and \
                     CONNECT_TIMEOUT_SECONDS",
                );
                report.skipped("target.tls", "the server cannot be reached");
                report.skipped("credential.current", "the server cannot be reached");
                None
            }
        }
    }

    fn report_tls(&self, current: &DatabaseSecret, server: &str, report: &mut Report) {
        match current.tls {
            TlsMode::Disable => report.skipped(
                "target.tls",
                format!("the secret asks for plain text with {server} (ssl false / sslmode disable)"),
            ),
            mode => report.passed("target.tls", format!("TLS with {server}, {}", tls_name(mode))),
        }
    }

    async fn previous_logs_in<S: SecretStore>(&self, secret: &CheckContext<'_, S>, current: &DatabaseSecret) -> bool {
        let Ok(Some(text)) = secret.store.get_value(secret.secret_id, None, stage::PREVIOUS).await else {
            return false;
        };
        let Ok(previous) = DatabaseSecret::parse(&text, &T::ENGINE) else {
            return false;
        };
        if !previous.same_account(current) {
            return false;
        }
        match self.target.connect(&previous).await {
            Ok(Login::Accepted(connection)) => {
                self.target.close(connection).await;
                true
            }
            _ => false,
        }
    }

    /// `master.secret`, `master.login`.
    async fn check_master<S: SecretStore>(
        &self,
        secret: &CheckContext<'_, S>,
        current: &DatabaseSecret,
        strategy: Strategy,
        report: &mut Report,
    ) {
        if current.masterarn.is_none() {
            report.skipped("master.secret", "the secret has no masterarn");
            return;
        }
        let master = match self.load_master_of(secret.store, secret.secret_id, current, strategy).await {
            Ok(master) => master,
            Err(error) => {
                let fix =
                    secrets_manager_fix(&error, "GetSecretValue", &shown(current.masterarn.as_deref().unwrap_or("")))
                        .unwrap_or_else(|| match &error {
                            Error::MasterSecret { problem, .. } if problem.contains("AccessDenied") => format!(
                                "the role may not call secretsmanager:GetSecretValue on {}: allow it",
                                shown(current.masterarn.as_deref().unwrap_or(""))
                            ),
                            _ => "point `masterarn` at a readable secret of this server's master user (JSON with \
                              username and password)"
                                .into(),
                        });
                report.failed("master.secret", error.to_string(), fix);
                report.skipped("master.login", "the master secret cannot be used");
                return;
            }
        };
        if strategy == Strategy::AlternatingUsers
            && (master.username == current.username || master.username == super::alternate_username(&current.username))
        {
            report.failed(
                "master.secret",
                "the master secret names the user being rotated (or its alternate)",
                "point `masterarn` at the secret of another user that may change passwords",
            );
            report.skipped("master.login", "the master secret cannot be used");
            return;
        }
        report.passed("master.secret", format!("the master secret names {}", master.account()));
        match self.target.connect(&master).await {
            Ok(Login::Accepted(connection)) => {
                self.target.close(connection).await;
                report.passed("master.login", format!("the master password of {} logs in", master.account()));
            }
            Ok(Login::Rejected) => report.failed(
                "master.login",
                Error::MasterRejected { account: master.account() }.to_string(),
                "correct the master secret's AWSCURRENT value (for an RDS-managed master secret, check that RDS \
                 rotated it and that `masterarn` names the current one)",
            ),
            Err(error) => report.failed(
                "master.login",
                error.to_string(),
                "the master secret's connection fields (host, port, ssl/sslmode) must reach the same server",
            ),
        }
    }

    /// `password.policy`: `GetRandomPassword` with the function's policy (it changes nothing),
    /// then the target's own rules for a new password.
    async fn check_password_policy<S: SecretStore>(
        &self,
        secret: &CheckContext<'_, S>,
        current: &DatabaseSecret,
        report: &mut Report,
    ) {
        let password = match secret.store.random_password(&self.settings.policy).await {
            Ok(password) => password,
            Err(error) => {
                let fix = secrets_manager_fix(&error, "GetRandomPassword", "*").unwrap_or_else(|| {
                    "check PASSWORD_LENGTH and the EXCLUDE_* variables: GetRandomPassword refuses them".into()
                });
                report.failed("password.policy", format!("GetRandomPassword failed: {error}"), fix);
                return;
            }
        };
        match self.target.check_new_password(current, &password) {
            Ok(()) => report.passed(
                "password.policy",
                format!(
                    "GetRandomPassword makes a {}-character password the server accepts",
                    self.settings.policy.length
                ),
            ),
            Err(error) => report.failed(
                "password.policy",
                error.to_string(),
                "change PASSWORD_LENGTH or EXCLUDE_CHARACTERS so that every new password suits the server",
            ),
        }
    }
}

fn tls_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Disable => "disabled",
        TlsMode::Require => "encrypted, certificate not verified (sslmode require)",
        TlsMode::VerifyCa => "certificate chain verified (sslmode verify-ca)",
        TlsMode::VerifyFull => "certificate and host name verified (verify-full)",
    }
}
