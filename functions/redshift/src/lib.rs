//! Rotates the password of an Amazon Redshift user (provisioned clusters and Redshift Serverless).
//!
//! Redshift speaks PostgreSQL's protocol, so the function logs in with the PostgreSQL function's
//! connection layer (own TCP stream with `TCP_NODELAY`, TLS verified by default, bounded logins
//! and statements). The new password reaches the server only in Redshift's md5 form
//! (`md5` + MD5(password + user name)), never as plain text. Whether the server is Redshift or
//! a PostgreSQL server standing in for it is read from `version()` at login, never assumed.

mod admin_api;
pub mod password;
mod twin;

use secrecy::{ExposeSecret, SecretString};
use tracing::warn;

use postgres_rotation::quote_identifier_up_to;
use postgres_rotation::session::{Connector, ServerBounds, Session};
use rotation::{ConnectSettings, DatabaseSecret, EngineInfo, Error, Login, PasswordPolicy, Target};

pub use admin_api::{CLUSTER_FIELD, NAMESPACE_FIELD};

/// Redshift keeps user, group and role names of up to 127 bytes.
pub const MAX_NAME_BYTES: usize = 127;
/// PostgreSQL, standing in for Redshift, truncates names longer than 63 bytes.
const POSTGRES_MAX_NAME_BYTES: usize = 63;

pub const ENGINE: EngineInfo = EngineInfo {
    label: "Amazon Redshift",
    engines: &["redshift"],
    default_port: 5439,
    default_dbname: Some("dev"),
    // AWS's Redshift templates exclude these; ' " \ / @ are characters Redshift refuses.
    default_excluded_characters: "/@\"'\\:",
    default_username_character_limit: None,
};

/// Which server answered, from `SELECT version()`: Redshift says "Redshift" in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Redshift,
    /// A PostgreSQL server (the end-to-end tests' stand-in): no Redshift roles, 63-byte names.
    Postgres,
}

impl Flavour {
    pub fn from_version(version: &str) -> Self {
        if version.contains("Redshift") { Flavour::Redshift } else { Flavour::Postgres }
    }

    fn of(session: &Session) -> Self {
        session.version.as_deref().map_or(Flavour::Postgres, Flavour::from_version)
    }

    fn max_name_bytes(self) -> usize {
        match self {
            Flavour::Redshift => MAX_NAME_BYTES,
            Flavour::Postgres => POSTGRES_MAX_NAME_BYTES,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Flavour::Redshift => "Amazon Redshift",
            Flavour::Postgres => "PostgreSQL",
        }
    }

    fn quote(self, name: &str) -> Result<String, String> {
        quote_identifier_up_to(name, self.max_name_bytes(), self.label())
    }
}

pub struct Redshift {
    connector: Connector,
    api: admin_api::AdminApi,
}

/// Whether a login failed because the user's password is stored in Redshift's `sha256|` form,
/// which asks the client for an authentication method (code 13) PostgreSQL's protocol lacks.
fn is_sha256_login(error: &Error) -> bool {
    matches!(error, Error::Unreachable { detail, .. } if detail.contains("unknown authentication tag `13`"))
}

fn target_error(action: &'static str, secret: &DatabaseSecret, detail: String) -> Error {
    Error::Target { action, host: secret.host.clone(), port: secret.port, detail, retryable: false }
}

impl Target for Redshift {
    type Connection = Session;

    const ENGINE: EngineInfo = ENGINE;

    const MAX_USERNAME_BYTES: usize = MAX_NAME_BYTES;

    fn new(settings: ConnectSettings) -> Self {
        // Redshift has no lock_timeout and takes no startup `options`: statement_timeout is set
        // after login, in the round trip that asks for version().
        Redshift {
            connector: Connector::with_bounds(settings, ServerBounds::SetAfterLogin),
            api: admin_api::AdminApi::default(),
        }
    }

    fn check_policy(policy: &PasswordPolicy) -> Result<(), Error> {
        password::check_policy(policy)
    }

    fn check_new_password(&self, secret: &DatabaseSecret, new_password: &SecretString) -> Result<(), Error> {
        match password::problem(new_password.expose_secret()) {
            None => Ok(()),
            Some(problem) => Err(target_error(
                "checking the new password",
                secret,
                format!("GetRandomPassword returned a password Redshift would refuse: {problem}"),
            )),
        }
    }

    async fn connect(&self, secret: &DatabaseSecret) -> Result<Login<Session>, Error> {
        match self.connector.login(secret).await {
            Err(error) if is_sha256_login(&error) => {
                // An answer about this password, not an unreachable server: with a master
                // strategy the master replaces it with an md5-form password that logs in.
                warn!(
                    user = %secret.username,
                    host = %secret.host,
                    "Redshift asked for its sha256 authentication, which a PostgreSQL-protocol client cannot do: \
                     the user's password is stored in sha256 form. Rotate it with the single-user-with-master or \
                     alternating-users strategy (the master sets an md5-form password), or set an md5-form \
                     password once with ALTER USER"
                );
                Ok(Login::Rejected)
            }
            other => other,
        }
    }

    async fn set_password(
        &self,
        session: &mut Session,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), Error> {
        let user = Flavour::of(session).quote(&secret.username).map_err(|d| target_error("ALTER USER", secret, d))?;
        let md5 = password::md5_form(new_password.expose_secret(), &secret.username);
        session.batch("ALTER USER", secret, &format!("ALTER USER {user} PASSWORD '{md5}'")).await
    }

    async fn check(&self, session: &mut Session, secret: &DatabaseSecret) -> Result<(), Error> {
        let user = session.texts("test query", secret, "SELECT current_user").await?;
        // Redshift folds user names to lower case unless enable_case_sensitive_identifier is on.
        let folded = Flavour::of(session) == Flavour::Redshift;
        match user.first() {
            Some(Some(user)) if *user == secret.username || (folded && user.eq_ignore_ascii_case(&secret.username)) => {
                Ok(())
            }
            other => {
                let found = other.cloned().flatten().unwrap_or_else(|| "nobody (no answer)".into());
                Err(target_error("test query", secret, format!("logged in as {found}, not as {}", secret.username)))
            }
        }
    }

    async fn prepare_alternate_user(
        &self,
        master: &mut Session,
        main_user: &str,
        alternate: &DatabaseSecret,
    ) -> Result<(), Error> {
        const ACTION: &str = "preparing the alternate user";
        let flavour = Flavour::of(master);
        let facts = twin::read_facts(master, flavour, main_user, alternate).await?;
        let md5 = password::md5_form(alternate.password.expose_secret(), &alternate.username);
        let statements = twin::statements(flavour, main_user, &alternate.username, &md5, &facts, &|n| flavour.quote(n))
            .map_err(|detail| target_error(ACTION, alternate, detail))?;
        // One simple query is one transaction: the clone logs in only once it has everything.
        master.batch(ACTION, alternate, &statements.join("; ")).await
    }

    fn check_admin_api(&self, secret: &DatabaseSecret) -> Result<(), Error> {
        admin_api::ApiTarget::of(secret).map(drop)
    }

    async fn set_password_by_api(&self, secret: &DatabaseSecret, new_password: &SecretString) -> Result<(), Error> {
        if let Some(problem) = password::problem(new_password.expose_secret()) {
            return Err(target_error("admin-api rotation", secret, format!("the new password: {problem}")));
        }
        self.api.set_password(&self.connector, secret, new_password).await
    }

    async fn close(&self, session: Session) {
        session.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flavour_comes_from_version() {
        let redshift = "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 (Red Hat \
                        3.4.2-6.fc3), Redshift 1.0.77467";
        assert_eq!(Flavour::from_version(redshift), Flavour::Redshift);
        let postgres = "PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc";
        assert_eq!(Flavour::from_version(postgres), Flavour::Postgres);
    }

    #[test]
    fn names_up_to_127_bytes_on_redshift_and_63_on_postgresql() {
        assert!(Flavour::Redshift.quote(&"n".repeat(127)).is_ok());
        assert!(Flavour::Redshift.quote(&"n".repeat(128)).unwrap_err().contains("Amazon Redshift allows 127"));
        assert!(Flavour::Postgres.quote(&"n".repeat(64)).unwrap_err().contains("PostgreSQL allows 63"));
        assert_eq!(Flavour::Redshift.quote("a\"b").unwrap(), "\"a\"\"b\"");
    }

    #[test]
    fn a_sha256_password_is_recognised_by_the_authentication_it_asks_for() {
        let error = |detail: &str| Error::Unreachable { host: "h".into(), port: 5439, detail: detail.into() };
        assert!(is_sha256_login(&error("error parsing response from server: unknown authentication tag `13`")));
        assert!(!is_sha256_login(&error("Connection refused (os error 111)")));
    }

    #[test]
    fn the_secret_defaults_are_those_of_redshift() {
        let text = SecretString::from(
            r#"{"engine": "redshift", "host": "c.abc.eu-west-1.redshift.amazonaws.com", "username": "u", "password": "p", "dbClusterIdentifier": "c"}"#,
        );
        let secret = DatabaseSecret::parse(&text, &ENGINE).unwrap();
        assert_eq!((secret.port, secret.dbname.as_deref()), (5439, Some("dev")));
        assert_eq!(secret.tls, rotation::TlsMode::VerifyFull);
        let postgres = SecretString::from(r#"{"engine": "postgres", "host": "h", "username": "u", "password": "p"}"#);
        assert!(DatabaseSecret::parse(&postgres, &ENGINE).unwrap_err().to_string().contains("rotates redshift"));
    }
}
