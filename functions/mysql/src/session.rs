//! How the function logs in to MySQL and MariaDB and talks to the server afterwards: the client
//! (mysql_async, which sets `TCP_NODELAY`), TLS configured once per process for each mode, the
//! session's bounds, and how the server's answers become the engine's errors.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, IoError, Opts, OptsBuilder, Row, SslOpts, Value};
use secrecy::ExposeSecret;
use tracing::debug;

use rotation::net::{is_tls_failure, rustls_error};
use rotation::{AMAZON_RDS_ROOTS_PEM, ConnectSettings, DatabaseSecret, Error, Login, TlsMode, deadline};

use crate::sql::SqlMode;
use crate::version::ServerVersion;

/// Server error numbers.
pub mod code {
    /// ER_ACCESS_DENIED_ERROR: wrong user name or password (SQLSTATE 28000).
    pub const LOGIN_REJECTED: u16 = 1045;
    /// ER_ACCOUNT_HAS_BEEN_LOCKED of MySQL and of MariaDB: the server refuses the login.
    pub const ACCOUNT_LOCKED: [u16; 2] = [3118, 4151];
    /// ER_SECURE_TRANSPORT_REQUIRED: the server refuses connections without TLS.
    pub const TLS_REQUIRED: u16 = 3159;
    /// ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR.
    pub const ACCESS_DENIED: [u16; 3] = [1044, 1142, 1227];
    /// ER_PARSE_ERROR, ER_SYNTAX_ERROR: their messages quote the statement.
    pub const QUOTES_STATEMENT: [u16; 2] = [1064, 1149];
    /// ER_LOCK_WAIT_TIMEOUT: another session held a lock longer than `innodb_lock_wait_timeout`
    /// or `lock_wait_timeout`.
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// MariaDB's ER_STATEMENT_TIMEOUT (`max_statement_time`) and MySQL's ER_QUERY_TIMEOUT
    /// (`max_execution_time`): the statement ran past the session's bound.
    pub const STATEMENT_TIMEOUT: [u16; 2] = [1969, 3024];
    /// Too many connections, shutdown in progress, too many connections of the user, lock wait
    /// timeout, deadlock, resource limit reached, connection killed: conditions of the moment.
    pub const RETRYABLE: [u16; 7] = [1040, 1053, 1203, LOCK_WAIT_TIMEOUT, 1213, 1226, 1927];
}

/// How long past the server-side bound the client waits for an answer before giving up on a
/// server that stopped answering.
const CLIENT_GRACE: Duration = Duration::from_secs(1);

/// The client's packet limit, and what it tells the server at login. Set, like
/// [`WAIT_TIMEOUT`], so that mysql_async does not ask the server for it after every login.
const MAX_ALLOWED_PACKET: usize = 64 << 20;

/// The idle time after which mysql_async would count a connection as expired (it only matters
/// to pools); the server's default.
const WAIT_TIMEOUT: usize = 28_800;

/// The label put in front of a wildcard name of a certificate to make a host name of it.
const WILDCARD_LABEL: &str = "verify-ca";

/// Logs in to MySQL and MariaDB. Built once per process.
pub struct Connector {
    settings: ConnectSettings,
    /// The options every login starts from, one per TLS mode (disable, require, verify-ca,
    /// verify-full), built on first use. mysql_async keeps the TLS connector it builds inside
    /// the options and shares it with their clones, so each mode's TLS configuration (root
    /// store, verifier) is made once per process and reused by every later login.
    base: [OnceLock<Opts>; 4],
    /// verify-ca with a certificate that does not name the host: per host, a name the
    /// certificate holds and base options with it as the TLS host name (see [`Connector::open`]).
    verify_ca_named: Mutex<HashMap<String, (String, Opts)>>,
}

/// A logged-in session and what the function needs to know about it.
pub struct Session {
    connection: Conn,
    pub server: ServerVersion,
    pub mode: SqlMode,
    /// The user name the session logged in with.
    pub login_user: String,
    /// `CURRENT_USER()`: the account the server authenticated, user and host parts.
    pub user: String,
    pub host: String,
    /// `STATEMENT_TIMEOUT_SECONDS`: each statement waits at most what is left of it.
    statement_timeout: Duration,
    /// The bound set on the server's side at login.
    bound: Duration,
    /// A statement got no answer in time (its wait): the connection's state is unknown, so
    /// nothing more is sent on it.
    stalled: Option<Duration>,
}

impl Connector {
    pub fn new(settings: ConnectSettings) -> Self {
        Connector { settings, base: Default::default(), verify_ca_named: Mutex::new(HashMap::new()) }
    }

    /// Logs in as the secret's user and reads what the statements depend on. A refused
    /// password is [`Login::Rejected`]; anything else that stops the login is an error.
    pub async fn login(&self, secret: &DatabaseSecret) -> Result<Login<Session>, Error> {
        let login_bound = deadline::bound(self.settings.timeout);
        let no_answer = || Error::Unreachable {
            host: secret.host.clone(),
            port: secret.port,
            detail: format!("no answer within {login_bound:?} (CONNECT_TIMEOUT_SECONDS)"),
        };
        let mut connection = match tokio::time::timeout(login_bound, self.open(secret)).await {
            Err(_elapsed) => return Err(no_answer()),
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return login_failure(secret, error),
        };
        let bound = deadline::bound(self.settings.statement_timeout);
        let handshake = connection.server_version();
        let bounds = SessionBounds::new(bound, handshake);
        let started = tokio::time::timeout(login_bound, first_round_trip(&mut connection, &bounds)).await;
        let (version, mode, current) = match started {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                close(connection, CLIENT_GRACE).await;
                return Err(target_error("starting the session", secret, &error));
            }
            Err(_elapsed) => {
                close(connection, Duration::ZERO).await;
                return Err(no_answer());
            }
        };
        let server = match ServerVersion::parse(&version) {
            Ok(server) => server,
            Err(detail) => {
                close(connection, CLIENT_GRACE).await;
                return Err(crate::command_error("reading the server version", secret, detail));
            }
        };
        let mut session = Session {
            connection,
            server,
            mode: SqlMode::parse(&mode),
            login_user: secret.username.clone(),
            user: String::new(),
            host: String::new(),
            statement_timeout: self.settings.statement_timeout,
            bound,
            stalled: None,
        };
        let (user, host) = current.rsplit_once('@').unwrap_or((current.as_str(), ""));
        (session.user, session.host) = (user.to_owned(), host.to_owned());
        if session.server.has_max_execution_time() && !bounds.max_execution_time {
            // The handshake did not show the server as MySQL 5.7.8 or later, VERSION() does.
            let statement = format!("SET SESSION max_execution_time = {}", max_execution_time_ms(bound));
            if let Err(error) = session.execute(&statement).await {
                let failure = target_error("starting the session", secret, &error);
                session.close().await;
                return Err(failure);
            }
        }
        Ok(Login::Accepted(session))
    }

    /// Opens the connection, TLS and authentication included.
    ///
    /// verify-ca checks the certificate's chain, not its name. mysql_async's own switch for
    /// that (`with_danger_skip_domain_validation`) recognises rustls's name error by its text,
    /// which rustls 0.23 no longer prints, so it is set but cannot be relied on: when the
    /// handshake fails only because the certificate names another host (rustls checks the
    /// chain first, so the chain was good), the login is made again with one of the names the
    /// certificate holds as the TLS host name. That second handshake checks the chain again,
    /// in full: nothing is accepted that the first one refused for any other reason. The name
    /// is remembered for the host, so later logins make one handshake.
    async fn open(&self, secret: &DatabaseSecret) -> Result<Conn, mysql_async::Error> {
        let remembered = match secret.tls {
            TlsMode::VerifyCa => self.verify_ca_remembered(&secret.host),
            _ => None,
        };
        let base = remembered.as_ref().unwrap_or_else(|| self.base(secret.tls));
        let error = match Conn::new(self.options(base, secret)).await {
            Ok(connection) => return Ok(connection),
            Err(error) => error,
        };
        if secret.tls != TlsMode::VerifyCa {
            return Err(error);
        }
        let Some(name) = certificate_name(&error) else {
            return Err(error);
        };
        debug!(
            host = %secret.host,
            certificate_name = %name,
            "verify-ca: the certificate does not name the host; logging in again with a name it holds"
        );
        let base = self.verify_ca_named(&secret.host, &name);
        Conn::new(self.options(&base, secret)).await
    }

    /// The base options of a TLS mode, built once per process.
    fn base(&self, mode: TlsMode) -> &Opts {
        let index = match mode {
            TlsMode::Disable => 0,
            TlsMode::Require => 1,
            TlsMode::VerifyCa => 2,
            TlsMode::VerifyFull => 3,
        };
        self.base[index].get_or_init(|| {
            debug!(tls = ?mode, "built the connection options of this TLS mode; later logins reuse them and their TLS connector");
            base_options(ssl_options(mode, self.settings.ca_bundle.as_deref())).into()
        })
    }

    fn verify_ca_remembered(&self, host: &str) -> Option<Opts> {
        let named = self.verify_ca_named.lock().unwrap_or_else(PoisonError::into_inner);
        named.get(host).map(|(_, options)| options.clone())
    }

    /// The verify-ca options of `host` with `name` as the TLS host name, built once per name.
    fn verify_ca_named(&self, host: &str, name: &str) -> Opts {
        let mut named = self.verify_ca_named.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, options)) = named.get(host)
            && known == name
        {
            return options.clone();
        }
        let ssl = ssl_options(TlsMode::VerifyCa, self.settings.ca_bundle.as_deref())
            .map(|ssl| ssl.with_danger_tls_hostname_override(Some(name.to_owned())));
        let options: Opts = base_options(ssl).into();
        named.insert(host.to_owned(), (name.to_owned(), options.clone()));
        options
    }

    /// One login's options: the base options of its mode (and so their TLS connector) with the
    /// secret's host, port, user, password and database. Built field by field, never from a
    /// URL: passwords with `@`, `:` or `/` broke URL parsing in other tools.
    fn options(&self, base: &Opts, secret: &DatabaseSecret) -> OptsBuilder {
        OptsBuilder::from_opts(base.clone())
            .ip_or_hostname(secret.host.clone())
            .tcp_port(secret.port)
            .user(Some(secret.username.clone()))
            .pass(Some(secret.password.expose_secret().to_owned()))
            .db_name(secret.dbname.clone())
    }
}

/// Options that send nothing at login beyond the handshake: no `SELECT @@max_allowed_packet,
/// @@wait_timeout, @@socket`, no statement cache.
fn base_options(ssl: Option<SslOpts>) -> OptsBuilder {
    OptsBuilder::default()
        // Never move to the server's Unix socket after a TCP login: that would leave TLS behind.
        .prefer_socket(false)
        .tcp_nodelay(true)
        .stmt_cache_size(0)
        .max_allowed_packet(Some(MAX_ALLOWED_PACKET))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .ssl_opts(ssl)
}

/// TLS of a mode. Trusted: mysql_async's built-in Mozilla roots, the Amazon RDS bundle and the
/// operator's `CA_BUNDLE_PATH`. With TLS asked for, a server without it is an error: there is no
/// plain-text fallback.
fn ssl_options(mode: TlsMode, operator_pem: Option<&[u8]>) -> Option<SslOpts> {
    let verifying = || {
        let mut roots = vec![AMAZON_RDS_ROOTS_PEM.into()];
        if let Some(pem) = operator_pem {
            roots.push(pem.to_vec().into());
        }
        SslOpts::default().with_root_certs(roots)
    };
    match mode {
        TlsMode::Disable => None,
        TlsMode::Require => Some(SslOpts::default().with_danger_accept_invalid_certs(true)),
        TlsMode::VerifyCa => Some(verifying().with_danger_skip_domain_validation(true)),
        TlsMode::VerifyFull => Some(verifying()),
    }
}

/// A name the server's certificate holds, from rustls's "not valid for name" error, as a TLS
/// host name: `DnsName("db.example.com")`, `DnsName("*.example.com")` (a wildcard stands for
/// one label) or `IpAddress(10.0.0.1)`.
fn certificate_name(error: &mysql_async::Error) -> Option<String> {
    let presented = rustls_error(error).and_then(|error| match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { presented, .. }) => {
            Some(presented)
        }
        _ => None,
    })?;
    presented.iter().find_map(|name| {
        let candidate = if let Some(dns) = name.strip_prefix("DnsName(\"").and_then(|n| n.strip_suffix("\")")) {
            match dns.strip_prefix("*.") {
                Some(parent) => format!("{WILDCARD_LABEL}.{parent}"),
                None => dns.to_owned(),
            }
        } else {
            let ip = name.strip_prefix("IpAddress(")?.strip_suffix(')')?;
            ip.parse::<std::net::IpAddr>().ok()?.to_string()
        };
        rustls::pki_types::ServerName::try_from(candidate.as_str()).is_ok().then_some(candidate)
    })
}

/// What a failed login means: a rejected password is an answer; a server out of reach, a TLS
/// failure or anything else is an error.
fn login_failure(secret: &DatabaseSecret, error: mysql_async::Error) -> Result<Login<Session>, Error> {
    let tls = |detail: String| Err(Error::Tls { host: secret.host.clone(), port: secret.port, detail });
    match &error {
        mysql_async::Error::Server(server) => match server.code {
            code::LOGIN_REJECTED => Ok(Login::Rejected),
            // A locked account (a clone whose preparation has not finished) does not log in.
            n if code::ACCOUNT_LOCKED.contains(&n) => Ok(Login::Rejected),
            code::TLS_REQUIRED => tls(server.message.clone()),
            _ => Err(target_error("login", secret, &DbError::from_client(error, None))),
        },
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => {
            tls("the server does not offer TLS".to_owned())
        }
        // A refused certificate, a wrong host name, an unusable CA bundle.
        mysql_async::Error::Io(IoError::Tls(e)) => tls(e.to_string()),
        mysql_async::Error::Io(IoError::Io(e)) if is_tls_failure(&error) => tls(e.to_string()),
        mysql_async::Error::Io(IoError::Io(e)) => {
            Err(Error::Unreachable { host: secret.host.clone(), port: secret.port, detail: e.to_string() })
        }
        _ => Err(target_error("login", secret, &DbError::from_client(error, None))),
    }
}

/// The statement that sets the session's bounds, sent with the first query.
struct SessionBounds {
    bound: Duration,
    statement: String,
    /// Whether it sets MySQL's `max_execution_time`.
    max_execution_time: bool,
}

impl SessionBounds {
    /// `lock_wait_timeout` (metadata locks: account and grant tables) and
    /// `innodb_lock_wait_timeout` in whole seconds; MariaDB's `max_statement_time` (every
    /// statement, in a comment only MariaDB 10.1.1+ executes); MySQL's `max_execution_time`
    /// (SELECT only) when the handshake shows MySQL 5.7.8 or later (MariaDB reports 10 and up).
    fn new(bound: Duration, handshake: (u16, u16, u16)) -> Self {
        let lock = lock_wait_seconds(bound);
        let mut statement = format!(
            "SET SESSION lock_wait_timeout = {lock}, innodb_lock_wait_timeout = {lock} \
             /*M!100101 , max_statement_time = {:.3} */",
            bound.as_secs_f64().max(0.001)
        );
        let max_execution_time = ((5, 7, 8)..(10, 0, 0)).contains(&handshake);
        if max_execution_time {
            statement.push_str(&format!(", max_execution_time = {}", max_execution_time_ms(bound)));
        }
        SessionBounds { bound, statement, max_execution_time }
    }
}

/// Lock waits are bounded in whole seconds, at least one: rounded up, so that they still end
/// before the client's own wait (the bound and a second).
fn lock_wait_seconds(bound: Duration) -> u64 {
    (bound.as_secs() + u64::from(bound.subsec_nanos() > 0)).max(1)
}

fn max_execution_time_ms(bound: Duration) -> u128 {
    bound.as_micros().div_ceil(1000).max(1)
}

/// `SELECT VERSION(), @@SESSION.sql_mode, CURRENT_USER()` and the session's bounds, in one
/// round trip.
async fn first_round_trip(connection: &mut Conn, bounds: &SessionBounds) -> Result<(String, String, String), DbError> {
    let sql = format!("SELECT VERSION(), @@SESSION.sql_mode, CURRENT_USER(); {}", bounds.statement);
    let failed = |error| DbError::from_client(error, Some(bounds.bound));
    let mut result = connection.query_iter(sql).await.map_err(failed)?;
    let rows: Vec<Row> = result.collect().await.map_err(failed)?;
    // The SET's answer: an error here is the SET's.
    result.drop_result().await.map_err(failed)?;
    let row = rows.first().ok_or_else(|| DbError::Unreadable("SELECT VERSION() gave no row".into()))?;
    Ok((text(row, 0)?, text(row, 1)?, text(row, 2)?))
}

async fn close(connection: Conn, grace: Duration) {
    // `disconnect` marks the connection closed before it writes anything, so even a zero
    // grace ends it here (the socket closes when the future is dropped) instead of in a
    // background task that would wait for a silent server.
    let _ = tokio::time::timeout(grace, connection.disconnect()).await;
}

impl Session {
    /// `user@host` of the authenticated account, for messages.
    pub fn current_account(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// Sends one statement as text (DDL takes no bind parameters), within the session's bound.
    pub async fn execute(&mut self, statement: &str) -> Result<(), DbError> {
        let wait = self.wait()?;
        let answer = tokio::time::timeout(wait + CLIENT_GRACE, self.connection.query_drop(statement)).await;
        self.settle(answer, wait)
    }

    /// The rows of one statement, sent as text, within the session's bound.
    pub async fn rows(&mut self, statement: &str) -> Result<Vec<Row>, DbError> {
        let wait = self.wait()?;
        let answer = tokio::time::timeout(wait + CLIENT_GRACE, self.connection.query::<Row, _>(statement)).await;
        self.settle(answer, wait)
    }

    fn wait(&self) -> Result<Duration, DbError> {
        match self.stalled {
            Some(wait) => Err(DbError::NoAnswer(wait)),
            None => Ok(deadline::bound(self.statement_timeout)),
        }
    }

    fn settle<T>(
        &mut self,
        answer: Result<Result<T, mysql_async::Error>, tokio::time::error::Elapsed>,
        wait: Duration,
    ) -> Result<T, DbError> {
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(DbError::from_client(error, Some(self.bound))),
            Err(_elapsed) => {
                self.stalled = Some(wait);
                Err(DbError::NoAnswer(wait))
            }
        }
    }

    /// Ends the session politely; failures are of no interest.
    pub async fn close(self) {
        let grace = if self.stalled.is_some() { Duration::ZERO } else { CLIENT_GRACE };
        close(self.connection, grace).await;
    }
}

/// What went wrong with a statement.
#[derive(Debug)]
pub enum DbError {
    /// The server's answer was an error. `bound` is the session's bound, when one was set.
    Server { code: u16, state: String, message: String, bound: Option<Duration> },
    /// No answer within the bound (the client's own wait).
    NoAnswer(Duration),
    /// The connection broke, or the client could not read the answer.
    Client(mysql_async::Error),
    /// An answer the function cannot read (a column that is NULL or not text).
    Unreadable(String),
}

impl DbError {
    fn from_client(error: mysql_async::Error, bound: Option<Duration>) -> Self {
        match error {
            mysql_async::Error::Server(server) => {
                DbError::Server { code: server.code, state: server.state, message: server.message, bound }
            }
            other => DbError::Client(other),
        }
    }

    pub fn number(&self) -> Option<u16> {
        match self {
            DbError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_access_denied(&self) -> bool {
        self.number().is_some_and(|n| code::ACCESS_DENIED.contains(&n))
    }

    /// Whether the same statement can succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Server { code, .. } => code::RETRYABLE.contains(code) || code::STATEMENT_TIMEOUT.contains(code),
            DbError::NoAnswer(_) => true,
            DbError::Client(error) => {
                matches!(error, mysql_async::Error::Io(_) | mysql_async::Error::Driver(DriverError::ConnectionClosed))
            }
            DbError::Unreadable(_) => false,
        }
    }

    /// Which bound of the session ran out, for the message.
    fn bound_note(&self) -> String {
        match self {
            DbError::Server { code, bound: Some(bound), .. } if code::STATEMENT_TIMEOUT.contains(code) => {
                format!(" (the statement ran past its bound of {bound:?}: STATEMENT_TIMEOUT_SECONDS)")
            }
            DbError::Server { code: code::LOCK_WAIT_TIMEOUT, bound: Some(bound), .. } => format!(
                " (another session held a lock for more than {}s: STATEMENT_TIMEOUT_SECONDS)",
                lock_wait_seconds(*bound)
            ),
            _ => String::new(),
        }
    }

    /// The message of an error of a statement that carries a password or its hash: syntax
    /// errors, which quote the statement, are reported by number only, and any form of the
    /// password is cut out of other messages.
    pub fn redacted(&self, secrets: &[String]) -> String {
        match self {
            DbError::Server { code, state, message, .. } => {
                if code::QUOTES_STATEMENT.contains(code) {
                    format!("{code} ({state}): the server refused the statement's syntax")
                } else {
                    let mut message = message.clone();
                    for secret in secrets {
                        message = message.replace(secret.as_str(), "[redacted]");
                    }
                    format!("{code} ({state}): {message}{}", self.bound_note())
                }
            }
            other => other.to_string(),
        }
    }
}

impl std::error::Error for DbError {}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Server { code, state, message, .. } => {
                write!(f, "{code} ({state}): {message}{}", self.bound_note())
            }
            DbError::NoAnswer(bound) => write!(f, "no answer within {bound:?} (STATEMENT_TIMEOUT_SECONDS)"),
            DbError::Client(error) => write!(f, "{error}"),
            DbError::Unreadable(problem) => f.write_str(problem),
        }
    }
}

pub fn target_error(action: &'static str, secret: &DatabaseSecret, error: &DbError) -> Error {
    Error::Target {
        action,
        host: secret.host.clone(),
        port: secret.port,
        detail: error.to_string(),
        retryable: error.is_retryable(),
    }
}

/// A column as UTF-8 text, whatever type the server gives it (blobs included).
pub fn text(row: &Row, index: usize) -> Result<String, DbError> {
    optional_text(row, index)?.ok_or_else(|| DbError::Unreadable(format!("column {index} is NULL")))
}

pub fn optional_text(row: &Row, index: usize) -> Result<Option<String>, DbError> {
    bytes(row, index)?
        .map(|b| String::from_utf8(b).map_err(|e| DbError::Unreadable(format!("column {index}: {e}"))))
        .transpose()
}

/// A column's bytes as the server sent them (the text protocol sends every value as text).
pub fn bytes(row: &Row, index: usize) -> Result<Option<Vec<u8>>, DbError> {
    match row.as_ref(index) {
        None => Err(DbError::Unreadable(format!("column {index} is missing"))),
        Some(Value::NULL) => Ok(None),
        Some(Value::Bytes(bytes)) => Ok(Some(bytes.clone())),
        Some(_) => Err(DbError::Unreadable(format!("column {index} is not text"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(host: &str, port: u16) -> DatabaseSecret {
        let json =
            format!(r#"{{"engine": "mysql", "host": "{host}", "port": {port}, "username": "app", "password": "pw"}}"#);
        DatabaseSecret::parse(&secrecy::SecretString::from(json), &<crate::Mysql as rotation::Target>::ENGINE).unwrap()
    }

    fn settings() -> ConnectSettings {
        ConnectSettings {
            timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            ca_bundle: None,
            tls: std::sync::Arc::new(rotation::net::TlsConfigs::new(None).unwrap()),
        }
    }

    fn server_error(code: u16, bound: Option<Duration>) -> DbError {
        DbError::Server { code, state: "HY000".into(), message: "the server's words".into(), bound }
    }

    #[test]
    fn each_tls_mode_has_one_set_of_options_per_process() {
        let connector = Connector::new(settings());
        for mode in [TlsMode::Disable, TlsMode::Require, TlsMode::VerifyCa, TlsMode::VerifyFull] {
            assert!(std::ptr::eq(connector.base(mode), connector.base(mode)), "{mode:?} is built once");
        }
        assert!(!std::ptr::eq(connector.base(TlsMode::VerifyCa), connector.base(TlsMode::VerifyFull)));
        assert!(connector.verify_ca_remembered("10.0.0.7").is_none());
        let named = connector.verify_ca_named("10.0.0.7", "db.example.com");
        assert_eq!(connector.verify_ca_remembered("10.0.0.7"), Some(named.clone()), "remembered for the host");
        assert_eq!(named, connector.verify_ca_named("10.0.0.7", "db.example.com"));
        assert_eq!(named.ssl_opts().unwrap().tls_hostname_override(), Some("db.example.com"));
        // The server's certificate changed names: the new one replaces the old.
        let renamed = connector.verify_ca_named("10.0.0.7", "db2.example.com");
        assert_eq!(renamed.ssl_opts().unwrap().tls_hostname_override(), Some("db2.example.com"));
        assert_eq!(connector.verify_ca_named.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_login_sends_nothing_but_the_handshake_and_never_leaves_tcp_or_tls() {
        let connector = Connector::new(settings());
        let secret = secret("db.example.com", 3307);
        for mode in [TlsMode::Disable, TlsMode::Require, TlsMode::VerifyCa, TlsMode::VerifyFull] {
            let options: Opts = connector.options(connector.base(mode), &secret).into();
            assert!(!options.prefer_socket(), "{mode:?}: a Unix socket would bypass TLS");
            assert!(options.socket().is_none());
            assert!(options.tcp_nodelay());
            assert!(options.max_allowed_packet().is_some() && options.wait_timeout().is_some());
            assert_eq!(options.ip_or_hostname(), "db.example.com");
            assert_eq!(options.tcp_port(), 3307);
            assert_eq!(options.user(), Some("app"));
            assert_eq!(options.ssl_opts().is_some(), mode != TlsMode::Disable, "{mode:?}");
        }
        let full = connector.base(TlsMode::VerifyFull).ssl_opts().unwrap().clone();
        assert!(!full.accept_invalid_certs() && !full.skip_domain_validation() && !full.disable_built_in_roots());
        assert_eq!(full.root_certs().len(), 1, "the Amazon RDS bundle beside the built-in roots");
        let ca = connector.base(TlsMode::VerifyCa).ssl_opts().unwrap().clone();
        assert!(!ca.accept_invalid_certs() && ca.skip_domain_validation());
        let require = connector.base(TlsMode::Require).ssl_opts().unwrap().clone();
        assert!(require.accept_invalid_certs());
    }

    #[test]
    fn the_operator_bundle_is_trusted_beside_the_others() {
        let mut settings = settings();
        settings.ca_bundle = Some(std::sync::Arc::from(&b"-----BEGIN CERTIFICATE-----"[..]));
        let connector = Connector::new(settings);
        assert_eq!(connector.base(TlsMode::VerifyFull).ssl_opts().unwrap().root_certs().len(), 2);
        assert_eq!(connector.base(TlsMode::VerifyCa).ssl_opts().unwrap().root_certs().len(), 2);
        let named = connector.verify_ca_named("10.0.0.7", "db.example.com");
        let ssl = named.ssl_opts().unwrap();
        assert_eq!(ssl.root_certs().len(), 2);
        assert_eq!(ssl.tls_hostname_override(), Some("db.example.com"));
    }

    fn name_error(presented: &[&str]) -> mysql_async::Error {
        let error = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            presented: presented.iter().map(|p| (*p).to_owned()).collect(),
        });
        mysql_async::Error::Io(IoError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, error)))
    }

    #[test]
    fn verify_ca_finds_a_name_the_certificate_holds() {
        assert_eq!(certificate_name(&name_error(&["DnsName(\"localhost\")"])).as_deref(), Some("localhost"));
        assert_eq!(
            certificate_name(&name_error(&["DirectoryName", "DnsName(\"*.c.rds.amazonaws.com\")"])).as_deref(),
            Some("verify-ca.c.rds.amazonaws.com")
        );
        assert_eq!(certificate_name(&name_error(&["IpAddress(10.0.0.7)"])).as_deref(), Some("10.0.0.7"));
        assert_eq!(certificate_name(&name_error(&["DirectoryName", "something new"])), None);
        assert_eq!(certificate_name(&name_error(&[])), None);
        // Any other certificate error is not a name error: no second attempt.
        let unknown_issuer = mysql_async::Error::Io(IoError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        assert_eq!(certificate_name(&unknown_issuer), None);
    }

    #[test]
    fn tls_failures_are_reported_as_tls_and_never_as_rejections() {
        let secret = secret("127.0.0.1", 3306);
        let failures = [
            name_error(&["DnsName(\"localhost\")"]),
            mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer),
            mysql_async::Error::Server(mysql_async::ServerError {
                code: code::TLS_REQUIRED,
                state: "HY000".into(),
                message: "Connections using insecure transport are prohibited".into(),
            }),
        ];
        for failure in failures {
            match login_failure(&secret, failure) {
                Err(Error::Tls { .. }) => {}
                Err(other) => panic!("not a TLS error: {other}"),
                Ok(_) => panic!("a TLS failure is not an answer to the password"),
            }
        }
    }

    #[test]
    fn rejected_passwords_and_locked_accounts_are_answers_and_unreachable_servers_errors() {
        let secret = secret("db", 3306);
        for number in [code::LOGIN_REJECTED, 3118, 4151] {
            let error = mysql_async::Error::Server(mysql_async::ServerError {
                code: number,
                state: "28000".into(),
                message: "no".into(),
            });
            assert!(matches!(login_failure(&secret, error), Ok(Login::Rejected)), "{number}");
        }
        let refused = mysql_async::Error::Io(IoError::Io(std::io::ErrorKind::ConnectionRefused.into()));
        match login_failure(&secret, refused) {
            Err(error @ Error::Unreachable { .. }) => assert!(error.is_retryable()),
            _ => panic!("a refused connection is an unreachable server"),
        }
        let other = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1049,
            state: "42000".into(),
            message: "Unknown database 'x'".into(),
        });
        match login_failure(&secret, other) {
            Err(error @ Error::Target { .. }) => assert!(!error.is_retryable(), "{error}"),
            _ => panic!("an unknown database is the target's error"),
        }
    }

    #[test]
    fn statement_timeouts_and_lock_waits_are_retryable_and_name_their_bound() {
        let secret = secret("db", 3306);
        let bound = Some(Duration::from_millis(2500));
        for number in code::STATEMENT_TIMEOUT {
            let error = target_error("changing the password", &secret, &server_error(number, bound));
            assert!(error.is_retryable(), "{number}");
            assert_eq!(error.error_type(), "Retryable.TargetCommand");
            let message = error.to_string();
            assert!(message.contains("ran past its bound of 2.5s: STATEMENT_TIMEOUT_SECONDS"), "{message}");
        }
        let lock = target_error("changing the password", &secret, &server_error(code::LOCK_WAIT_TIMEOUT, bound));
        assert!(lock.is_retryable());
        assert!(lock.to_string().contains("held a lock for more than 3s: STATEMENT_TIMEOUT_SECONDS"), "{lock}");
        let deadlock = server_error(1213, bound);
        assert!(deadlock.is_retryable() && !deadlock.to_string().contains("STATEMENT_TIMEOUT_SECONDS"));
        let silent = target_error("reading grants", &secret, &DbError::NoAnswer(Duration::from_secs(2)));
        assert!(silent.is_retryable());
        assert!(silent.to_string().contains("no answer within 2s (STATEMENT_TIMEOUT_SECONDS)"), "{silent}");
        let broken = DbError::Client(mysql_async::Error::Driver(DriverError::ConnectionClosed));
        assert!(broken.is_retryable());
        for number in [1044, 1064, 1396] {
            assert!(!server_error(number, bound).is_retryable(), "{number}");
        }
        assert!(!DbError::Unreadable("column 0 is NULL".into()).is_retryable());
    }

    #[test]
    fn redacted_messages_keep_the_bound_and_drop_the_password() {
        let error = DbError::Server {
            code: 1969,
            state: "70100".into(),
            message: "Query execution was interrupted (max_statement_time exceeded) s3cret".into(),
            bound: Some(Duration::from_secs(2)),
        };
        let message = error.redacted(&["s3cret".to_owned()]);
        assert!(!message.contains("s3cret") && message.contains("[redacted]"), "{message}");
        assert!(message.contains("STATEMENT_TIMEOUT_SECONDS"), "{message}");
        let syntax = server_error(1064, None).redacted(&[]);
        assert_eq!(syntax, "1064 (HY000): the server refused the statement's syntax");
    }

    #[test]
    fn the_session_bounds_fit_each_server() {
        let mariadb = SessionBounds::new(Duration::from_millis(2500), (10, 11, 19));
        assert_eq!(
            mariadb.statement,
            "SET SESSION lock_wait_timeout = 3, innodb_lock_wait_timeout = 3 /*M!100101 , max_statement_time = 2.500 */"
        );
        assert!(!mariadb.max_execution_time);
        let mysql = SessionBounds::new(Duration::from_secs(10), (8, 0, 36));
        assert!(mysql.max_execution_time);
        assert!(mysql.statement.ends_with("*/, max_execution_time = 10000"), "{}", mysql.statement);
        assert!(mysql.statement.contains("lock_wait_timeout = 10, innodb_lock_wait_timeout = 10 "));
        // MySQL before 5.7.8 (and MariaDB 5.5) have no max_execution_time.
        assert!(!SessionBounds::new(Duration::from_secs(10), (5, 7, 7)).max_execution_time);
        assert!(!SessionBounds::new(Duration::from_secs(10), (5, 5, 5)).max_execution_time);
        // The shortest bound still sets a bound: zero would mean none.
        let short = SessionBounds::new(Duration::from_micros(10), (8, 4, 0));
        assert!(short.statement.contains("lock_wait_timeout = 1,"), "{}", short.statement);
        assert!(short.statement.contains("max_statement_time = 0.001 "), "{}", short.statement);
        assert!(short.statement.ends_with("max_execution_time = 1"), "{}", short.statement);
    }

    #[test]
    fn lock_waits_end_before_the_clients_own_wait() {
        for millis in [1, 100, 999, 1000, 1001, 2500, 10_000] {
            let bound = Duration::from_millis(millis);
            let lock = Duration::from_secs(lock_wait_seconds(bound));
            assert!(lock >= bound.min(Duration::from_secs(1)) && lock < bound + CLIENT_GRACE, "{millis} ms");
        }
    }
}
