use std::future::Future;

use secrecy::SecretString;

use crate::{ConnectSettings, DatabaseSecret, Error, PasswordPolicy};

/// What an engine is called and what its secrets default to.
#[derive(Debug)]
pub struct EngineInfo {
    /// For people: "PostgreSQL".
    pub label: &'static str,
    /// Accepted values of the secret's `engine` field.
    pub engines: &'static [&'static str],
    pub default_port: u16,
    pub default_dbname: Option<&'static str>,
    /// `EXCLUDE_CHARACTERS` when the variable is not set, as in AWS's template for this engine.
    pub default_excluded_characters: &'static str,
    /// `USERNAME_CHARACTER_LIMIT` when the variable is not set.
    pub default_username_character_limit: Option<usize>,
}

/// The answer to a login attempt. A server that answered "wrong password" gives
/// [`Login::Rejected`]; a server that could not be reached, a TLS failure or a timeout is
/// an [`Error`], never a rejection, so it never makes the engine try the next credential.
pub enum Login<C> {
    Accepted(C),
    Rejected,
}

/// The error of a strategy the target does not implement.
fn unsupported(action: &'static str, secret: &DatabaseSecret, detail: String) -> Error {
    Error::Target { action, host: secret.host.clone(), port: secret.port, detail, retryable: false }
}

/// A service whose credentials a function rotates. Implemented once per function crate.
///
/// `setSecret` counts a pending password that logs in as done, so every method that changes
/// the target must be all-or-nothing as far as that login is concerned: a half-finished change
/// must not leave the pending credentials able to log in.
pub trait Target: Send + Sync + Sized + 'static {
    type Connection: Send;

    const ENGINE: EngineInfo;

    /// The longest user name the engine keeps intact, in bytes.
    const MAX_USERNAME_BYTES: usize = usize::MAX;

    fn new(settings: ConnectSettings) -> Self;

    /// Refuses, at start, a password policy that could generate passwords the target refuses,
    /// so an impossible setting stops the function with a message naming the variable.
    fn check_policy(policy: &PasswordPolicy) -> Result<(), Error> {
        let _ = policy;
        Ok(())
    }

    /// Refuses a new password the target would not accept; `createSecret` asks before it stores it.
    fn check_new_password(&self, secret: &DatabaseSecret, password: &SecretString) -> Result<(), Error> {
        let _ = (secret, password);
        Ok(())
    }

    /// Whether the secret can be rotated with the `admin-api` strategy; `createSecret` asks
    /// before anything is stored.
    fn check_admin_api(&self, secret: &DatabaseSecret) -> Result<(), Error> {
        Err(unsupported("admin-api rotation", secret, format!("{} has no admin API rotation", Self::ENGINE.label)))
    }

    /// The `admin-api` strategy's password change: sets the secret user's password through the
    /// service's management API, not over a database session. Returns once the new password is
    /// in effect, or with an error (retryable when the change may still be applied).
    fn set_password_by_api(
        &self,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = new_password;
        async move {
            Err(unsupported("admin-api rotation", secret, format!("{} has no admin API rotation", Self::ENGINE.label)))
        }
    }

    /// Logs in with the secret's credentials.
    fn connect(&self, secret: &DatabaseSecret) -> impl Future<Output = Result<Login<Self::Connection>, Error>> + Send;

    /// Sets the password of `username`, over a connection opened by [`Target::connect`].
    fn set_password(
        &self,
        connection: &mut Self::Connection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Runs a query that proves the connection is usable as the secret's user.
    fn check(
        &self,
        connection: &mut Self::Connection,
        secret: &DatabaseSecret,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether the server behind `connection` can keep two passwords of one user, asked in
    /// `createSecret` so an unsupported strategy stops before anything is stored.
    fn check_dual_password_support(
        &self,
        connection: &mut Self::Connection,
        secret: &DatabaseSecret,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = connection;
        async move {
            Err(unsupported("dual-password rotation", secret, format!("{} has no dual passwords", Self::ENGINE.label)))
        }
    }

    /// Sets the user's own password and keeps the old one working until the next rotation,
    /// first discarding the password an earlier rotation kept (MySQL 8 dual passwords).
    fn set_password_retaining_old(
        &self,
        connection: &mut Self::Connection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (connection, new_password);
        async move {
            Err(unsupported("dual-password rotation", secret, format!("{} has no dual passwords", Self::ENGINE.label)))
        }
    }

    /// As the master user, creates the alternate user of `main_user` if it is missing (else
    /// only sets its password) and gives it the main user's privileges.
    fn prepare_alternate_user(
        &self,
        master: &mut Self::Connection,
        main_user: &str,
        alternate: &DatabaseSecret,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (master, main_user);
        async move {
            let detail = format!("{} does not support it yet", Self::ENGINE.label);
            Err(unsupported("alternating-users rotation", alternate, detail))
        }
    }

    /// Proves a connection of an alternating user can use what the main user can.
    fn check_alternate(
        &self,
        connection: &mut Self::Connection,
        main_user: &str,
        secret: &DatabaseSecret,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = main_user;
        self.check(connection, secret)
    }

    /// Ends the session politely; failures are of no interest.
    fn close(&self, connection: Self::Connection) -> impl Future<Output = ()> + Send;
}
