//! A logged-in PostgreSQL session: how the function logs in (its own TCP stream with
//! `TCP_NODELAY`, TLS from the process's one configuration, bounds on every statement) and how
//! the server's answers become the engine's errors.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use rotation::net::{is_tls_failure, open_tcp};
use rotation::{ConnectSettings, DatabaseSecret, Error, Login, TlsMode, deadline};

/// SQLSTATE codes of a login the server refused: wrong password (28P01), or no such role,
/// no `LOGIN` right or no `pg_hba.conf` entry (28000).
const LOGIN_REJECTED: [&SqlState; 2] = [&SqlState::INVALID_PASSWORD, &SqlState::INVALID_AUTHORIZATION_SPECIFICATION];

/// How long past the server-side bound the client waits for an answer before giving up on a
/// server that stopped answering.
const CLIENT_GRACE: Duration = Duration::from_secs(1);

/// How much longer a statement may run than it may wait for a lock.
const LOCK_FIRST: Duration = Duration::from_millis(250);

/// Logs in to PostgreSQL. Built once per process: the TLS connectors are made here.
pub struct Connector {
    settings: ConnectSettings,
    bounds: ServerBounds,
    verify_full: MakeRustlsConnect,
    verify_ca: MakeRustlsConnect,
    require: MakeRustlsConnect,
}

/// How a session gets its server-side bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerBounds {
    /// PostgreSQL: `lock_timeout` and `statement_timeout` in the startup packet's `options`,
    /// at no extra round trip.
    StartupOptions,
    /// Amazon Redshift, which refuses or ignores startup `options` and has no `lock_timeout`:
    /// `SET statement_timeout` right after login, in the same round trip as `SELECT version()`
    /// (kept in [`Session::version`]).
    SetAfterLogin,
}

pub struct Session {
    client: Client,
    connection: JoinHandle<()>,
    /// The role that logged in.
    pub user: String,
    /// The server's major version (`server_version` reported at login).
    pub major_version: u32,
    /// The bound on each statement and lock wait of this session.
    bound: Duration,
    /// What `SELECT version()` answered at login ([`ServerBounds::SetAfterLogin`] only).
    pub version: Option<String>,
}

impl Connector {
    pub fn new(settings: ConnectSettings) -> Self {
        Self::with_bounds(settings, ServerBounds::StartupOptions)
    }

    /// A connector whose sessions get their bounds as `bounds` says.
    pub fn with_bounds(settings: ConnectSettings, bounds: ServerBounds) -> Self {
        let connector = |mode| {
            let config = settings.tls.for_mode(mode).expect("a TLS mode has a configuration");
            MakeRustlsConnect::new(config.as_ref().clone())
        };
        Connector {
            verify_full: connector(TlsMode::VerifyFull),
            verify_ca: connector(TlsMode::VerifyCa),
            require: connector(TlsMode::Require),
            settings,
            bounds,
        }
    }

    /// Logs in as the secret's user. A refused password is [`Login::Rejected`]; anything else
    /// that stops the login is an error, never a rejection.
    pub async fn login(&self, secret: &DatabaseSecret) -> Result<Login<Session>, Error> {
        let login_bound = deadline::bound(self.settings.timeout);
        let statement_bound = deadline::bound(self.settings.statement_timeout);
        let no_answer = || Error::Unreachable {
            host: secret.host.clone(),
            port: secret.port,
            detail: format!("no answer within {login_bound:?} (CONNECT_TIMEOUT_SECONDS)"),
        };
        let mut config = Config::new();
        config
            .user(&secret.username)
            .password(secret.password.expose_secret())
            .application_name("secrets-manager-rotation");
        if self.bounds == ServerBounds::StartupOptions {
            // Server-side bounds from the first statement on, at no extra round trip. The lock
            // bound runs out first, so a wait for another session's lock is reported as such.
            config.options(format!(
                "-c lock_timeout={} -c statement_timeout={}",
                statement_bound.as_millis().max(1),
                (statement_bound + LOCK_FIRST).as_millis()
            ));
        }
        if let Some(dbname) = &secret.dbname {
            config.dbname(dbname);
        }
        let login = async {
            let stream = open_tcp(&secret.host, secret.port, login_bound).await.map_err(|e| Error::Unreachable {
                host: secret.host.clone(),
                port: secret.port,
                detail: e.to_string(),
            })?;
            let tls = match secret.tls {
                TlsMode::Disable => None,
                TlsMode::Require => Some(&self.require),
                TlsMode::VerifyCa => Some(&self.verify_ca),
                TlsMode::VerifyFull => Some(&self.verify_full),
            };
            // No plain-text fallback: with TLS asked for, a server without TLS is an error.
            let spawned = match tls {
                None => {
                    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    config.connect_raw(stream, NoTls).await.map(|(client, connection)| {
                        let version = connection.parameter("server_version").map(major_version);
                        (client, version, tokio::spawn(async move { drop(connection.await) }))
                    })
                }
                Some(connector) => {
                    config.ssl_mode(tokio_postgres::config::SslMode::Require);
                    let tls =
                        MakeTlsConnect::<TcpStream>::make_tls_connect(&mut connector.clone(), &secret.host).map_err(
                            |e| Error::Tls { host: secret.host.clone(), port: secret.port, detail: e.to_string() },
                        )?;
                    config.connect_raw(stream, tls).await.map(|(client, connection)| {
                        let version = connection.parameter("server_version").map(major_version);
                        (client, version, tokio::spawn(async move { drop(connection.await) }))
                    })
                }
            };
            Ok(spawned)
        };
        let (client, version, connection) = match tokio::time::timeout(login_bound, login).await {
            Err(_elapsed) => return Err(no_answer()),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(Ok(spawned))) => spawned,
            Ok(Ok(Err(error))) => return login_failure(secret, &error),
        };
        let mut session = Session {
            client,
            connection,
            user: secret.username.clone(),
            major_version: version.unwrap_or(0),
            bound: statement_bound,
            version: None,
        };
        if self.bounds == ServerBounds::SetAfterLogin {
            let sql =
                format!("SET statement_timeout TO {}; SELECT version()", (statement_bound + LOCK_FIRST).as_millis());
            match session.texts("setting statement_timeout", secret, &sql).await {
                Ok(rows) => session.version = rows.into_iter().flatten().next(),
                Err(error) => {
                    session.close().await;
                    return Err(error);
                }
            }
        }
        Ok(Login::Accepted(session))
    }
}

fn major_version(server_version: &str) -> u32 {
    server_version.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn login_failure(secret: &DatabaseSecret, error: &tokio_postgres::Error) -> Result<Login<Session>, Error> {
    if let Some(code) = error.code() {
        if LOGIN_REJECTED.contains(&code) {
            return Ok(Login::Rejected);
        }
        return Err(target_error("login", secret, error));
    }
    let detail = error.to_string();
    // tokio-postgres says "error performing TLS handshake" for a server without TLS, for
    // rustls's own refusal (bad certificate, wrong host name), which it wraps in an I/O error,
    // and for a connection lost in the middle of the handshake: only the last is the network's
    // doing, and retryable.
    let lost_in_handshake = !is_tls_failure(error) && has_io_error(error);
    if is_tls_failure(error) || (detail.starts_with("error performing TLS handshake") && !lost_in_handshake) {
        return Err(Error::Tls { host: secret.host.clone(), port: secret.port, detail });
    }
    if detail.starts_with("authentication error") {
        return Err(target_error("login", secret, error));
    }
    // tokio-postgres's message names only the kind ("error parsing response from server"):
    // the causes say what (Redshift's sha256 login: "unknown authentication tag `13`").
    Err(Error::Unreachable { host: secret.host.clone(), port: secret.port, detail: rotation::with_causes(error) })
}

/// Whether an I/O error (a reset, an end of stream) is among the causes of `error`.
fn has_io_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = error.source();
    while let Some(error) = cause {
        if error.is::<std::io::Error>() {
            return true;
        }
        cause = error.source();
    }
    false
}

impl Session {
    /// Sends statements as text, in one round trip (DDL takes no bind parameters).
    pub async fn batch(&self, action: &'static str, secret: &DatabaseSecret, sql: &str) -> Result<(), Error> {
        self.bounded(action, secret, self.client.batch_execute(sql)).await
    }

    /// The first column of each row of a parameterless query, as text (NULL as `None`).
    pub async fn texts(
        &self,
        action: &'static str,
        secret: &DatabaseSecret,
        sql: &str,
    ) -> Result<Vec<Option<String>>, Error> {
        let messages = self.bounded(action, secret, self.client.simple_query(sql)).await?;
        Ok(messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                _ => None,
            })
            .collect())
    }

    /// A query with typed parameters, in one round trip (no prepared statement).
    pub async fn rows(
        &self,
        action: &'static str,
        secret: &DatabaseSecret,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        self.bounded(action, secret, self.client.query_typed(sql, params)).await
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        secret: &DatabaseSecret,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.bound + LOCK_FIRST + CLIENT_GRACE, work).await {
            Ok(result) => result.map_err(|e| self.error(action, secret, &e)),
            Err(_elapsed) => Err(Error::Target {
                action,
                host: secret.host.clone(),
                port: secret.port,
                detail: format!("no answer within {:?} (STATEMENT_TIMEOUT_SECONDS)", self.bound),
                retryable: true,
            }),
        }
    }

    fn error(&self, action: &'static str, secret: &DatabaseSecret, error: &tokio_postgres::Error) -> Error {
        let mut failure = target_error(action, secret, error);
        if let (Some(code), Error::Target { detail, .. }) = (error.code(), &mut failure) {
            if code == &SqlState::QUERY_CANCELED {
                detail.push_str(&format!(" (the statement ran past {:?}: STATEMENT_TIMEOUT_SECONDS)", self.bound));
            } else if code == &SqlState::LOCK_NOT_AVAILABLE {
                detail.push_str(&format!(
                    " (a lock was held by another session for {:?}: STATEMENT_TIMEOUT_SECONDS)",
                    self.bound
                ));
            } else if code == &SqlState::INSUFFICIENT_PRIVILEGE && self.major_version >= 16 {
                // The server's DETAIL names the role: `... the ADMIN option on role "app" may ...`.
                let server_detail = error.as_db_error().and_then(|db| db.detail()).unwrap_or_default();
                let role = role_named_in(server_detail).unwrap_or(&secret.username);
                detail.push_str(&format!(
                    "; the master user {master} lacks ADMIN OPTION on role {role}, which PostgreSQL 16 and later \
                     require of a CREATEROLE user to change or grant a role it did not create: as a superuser \
                     (or the role's creator) run GRANT {role} TO {master} WITH ADMIN OPTION",
                    master = quote_for_message(&self.user),
                    role = quote_for_message(role),
                ));
            }
        }
        failure
    }

    /// Ends the session politely; failures are of no interest.
    pub async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(CLIENT_GRACE, self.connection).await;
    }
}

/// The role a PostgreSQL 16+ privilege DETAIL names: `... ADMIN option on role "x" may alter
/// this role.` The server does not escape quotes inside the name, so the name ends at the last
/// `" may`.
fn role_named_in(detail: &str) -> Option<&str> {
    let (_, rest) = detail.split_once("on role \"")?;
    rest.rsplit_once("\" may ").map(|(role, _)| role)
}

fn quote_for_message(name: &str) -> String {
    crate::quote_identifier(name).unwrap_or_else(|_| name.chars().take(63).collect())
}

/// Class 08 (connection), 40 (serialization failure, deadlock: another session's work),
/// 53 (resources), 55P03 (lock not available), 57 (operator intervention, cancelled
/// statements, shutdown) are conditions of the moment. So is the internal error (XX000) two
/// sessions get when they change one catalogue row at once, as two `ALTER ROLE … PASSWORD` of
/// concurrent invocations of one step do: "tuple concurrently updated".
fn is_retryable(code: &SqlState, message: &str) -> bool {
    ["08", "40", "53", "57"].iter().any(|class| code.code().starts_with(class))
        || code == &SqlState::LOCK_NOT_AVAILABLE
        || (code == &SqlState::INTERNAL_ERROR && message.starts_with("tuple concurrently "))
}

pub fn target_error(action: &'static str, secret: &DatabaseSecret, error: &tokio_postgres::Error) -> Error {
    let (detail, retryable) = match error.as_db_error() {
        Some(db) => {
            let mut detail = format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
            if let Some(more) = db.detail() {
                detail.push_str(&format!(" DETAIL: {more}"));
            }
            if let Some(hint) = db.hint() {
                detail.push_str(&format!(" HINT: {hint}"));
            }
            (detail, is_retryable(db.code(), db.message()))
        }
        // The connection broke or the server went away: the next attempt may work.
        None => (error.to_string(), error.is_closed() || error.to_string().starts_with("error communicating")),
    };
    Error::Target { action, host: secret.host.clone(), port: secret.port, detail, retryable }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_major_version_of_every_format() {
        assert_eq!(major_version("15.18 (Debian 15.18-0+deb12u1)"), 15);
        assert_eq!(major_version("18.1"), 18);
        assert_eq!(major_version("9.6.24"), 9);
        assert_eq!(major_version("8.0.2"), 8);
        assert_eq!(major_version("devel"), 0);
    }

    #[test]
    fn the_role_of_a_privilege_detail_is_read_whole() {
        let alter =
            "Only roles with the CREATEROLE attribute and the ADMIN option on role \"app\" may alter this role.";
        assert_eq!(role_named_in(alter), Some("app"));
        let quoted = "Only roles with the ADMIN option on role \"Shop \"0488\" Owner\" may grant this role.";
        assert_eq!(role_named_in(quoted), Some("Shop \"0488\" Owner"));
        assert_eq!(role_named_in("permission denied"), None);
    }

    #[test]
    fn conditions_of_the_moment_are_retryable() {
        for code in [
            SqlState::QUERY_CANCELED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
        ] {
            assert!(is_retryable(&code, "any"), "{}", code.code());
        }
        assert!(is_retryable(&SqlState::INTERNAL_ERROR, "tuple concurrently updated"));
        assert!(is_retryable(&SqlState::INTERNAL_ERROR, "tuple concurrently deleted"));
        assert!(!is_retryable(&SqlState::INTERNAL_ERROR, "cache lookup failed for role 16384"));
        for code in [SqlState::INSUFFICIENT_PRIVILEGE, SqlState::SYNTAX_ERROR, SqlState::UNDEFINED_OBJECT] {
            assert!(!is_retryable(&code, "any"), "{}", code.code());
        }
    }
}
