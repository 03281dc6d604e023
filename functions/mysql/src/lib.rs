//! Rotates the password of a MySQL or MariaDB account (MySQL 5.7, 8.x, 9.x, Aurora MySQL, MariaDB).
//!
//! The function reads what the server is (`SELECT VERSION()`), the session's `sql_mode` and the
//! account it logged in as (`CURRENT_USER()`), and picks its statements from them:
//!
//! - wherever the server accepts it, the new password travels as its `mysql_native_password`
//!   hash, so neither the statement nor the server's logs hold the plain text (MariaDB always;
//!   MySQL for `mysql_native_password` accounts when the session may use the hash form);
//! - `caching_sha2_password` accounts (MySQL 8 and later), dual passwords and MySQL accounts
//!   without `CREATE USER` changing their own password send it as a literal, escaped for the
//!   session's `sql_mode`, over the (verified) TLS connection;
//! - account names are always string literals (`'user'@'host'`), never concatenated as they come.

mod grants;
mod session;
mod sql;
mod version;

use std::collections::HashMap;

use mysql_async::Row;
use secrecy::{ExposeSecret, SecretString};
use tracing::{debug, info};

use rotation::{ConnectSettings, DatabaseSecret, EngineInfo, Error, Login, Target};

use session::{Connector, DbError, bytes, optional_text, target_error, text};

use grants::{Grant, Line, parse_line};
use sql::{
    AccountAttributes, Plugin, account, account_password_change, dual_password_statements, own_password_change,
    password_clause,
};

pub use session::Session;
pub use sql::{SqlMode, native_password_hash, quote_string};
pub use version::{Flavour, ServerVersion};

/// The longest alternate user name accepted, in bytes (the engine counts bytes).
///
/// MySQL 5.7, 8 and 9 and Aurora MySQL allow user names of 32 characters, MariaDB 80. The
/// engine checks the name in `createSecret`, before it knows which server it will talk to, so
/// the limit is the one every supported server accepts: a name of at most 32 bytes has at
/// most 32 characters. A longer name would otherwise be stored as `AWSPENDING` and then be
/// refused by `CREATE USER` in every `setSecret`, blocking the next rotations.
const MAX_USER_NAME_BYTES: usize = 32;

pub struct Mysql {
    connector: Connector,
}

impl Target for Mysql {
    type Connection = Session;

    const ENGINE: EngineInfo = EngineInfo {
        label: "MySQL",
        engines: &["mysql", "aurora-mysql", "mariadb"],
        default_port: 3306,
        default_dbname: None,
        default_excluded_characters: "/@\"'\\",
        default_username_character_limit: Some(16),
    };

    const MAX_USERNAME_BYTES: usize = MAX_USER_NAME_BYTES;

    fn new(settings: ConnectSettings) -> Self {
        Mysql { connector: Connector::new(settings) }
    }

    async fn connect(&self, secret: &DatabaseSecret) -> Result<Login<Session>, Error> {
        let login = self.connector.login(secret).await?;
        if let Login::Accepted(session) = &login {
            debug!(server = %session.server, account = %session.current_account(), "logged in");
        }
        Ok(login)
    }

    async fn set_password(
        &self,
        session: &mut Session,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), Error> {
        if session.user == secret.username {
            return set_own_password(session, secret, new_password).await;
        }
        if session.login_user == secret.username {
            return Err(not_own_account(session, secret, "changing the password"));
        }
        // A master session: every account of that user name gets the password, whatever its host.
        set_account_passwords(session, secret, &secret.username, new_password).await
    }

    async fn check(&self, session: &mut Session, secret: &DatabaseSecret) -> Result<(), Error> {
        // CURRENT_USER() again, not the value read at login: the check proves the session works.
        let current =
            fetch_text(session, "SELECT CURRENT_USER()").await.map_err(|e| target_error("test query", secret, &e))?;
        let user = current.rsplit_once('@').map_or(current.as_str(), |(user, _)| user);
        if user != secret.username {
            return Err(command_error(
                "test query",
                secret,
                format!("logged in as {current}, not as {}", secret.username),
            ));
        }
        Ok(())
    }

    async fn check_dual_password_support(&self, session: &mut Session, secret: &DatabaseSecret) -> Result<(), Error> {
        const ACTION: &str = "dual-password rotation";
        if !session.server.has_dual_passwords() {
            let detail = format!(
                "dual passwords (RETAIN CURRENT PASSWORD) need MySQL 8.0.14 or later; the server is {}",
                session.server
            );
            return Err(command_error(ACTION, secret, detail));
        }
        // Keeping the current password needs one of these privileges; without them setSecret
        // would fail after the pending version is stored.
        let grants = fetch_texts(session, "SHOW GRANTS").await.map_err(|e| target_error(ACTION, secret, &e))?;
        let privileged = grants.iter().any(|grant| {
            let grant = grant.to_ascii_uppercase();
            grant.contains("APPLICATION_PASSWORD_ADMIN")
                || (grant.contains(" ON *.* ") && (grant.contains("CREATE USER") || grant.contains("ALL PRIVILEGES")))
        });
        if !privileged {
            let detail = format!(
                "{} lacks APPLICATION_PASSWORD_ADMIN (or CREATE USER), which keeping the current password needs",
                session.current_account()
            );
            return Err(command_error(ACTION, secret, detail));
        }
        Ok(())
    }

    async fn set_password_retaining_old(
        &self,
        session: &mut Session,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), Error> {
        const ACTION: &str = "dual-password rotation";
        let [discard, retain] = dual_password_statements(&session.server, new_password.expose_secret(), session.mode)
            .map_err(|detail| command_error(ACTION, secret, detail))?;
        if session.user != secret.username {
            return Err(not_own_account(session, secret, ACTION));
        }
        execute(session, &discard).await.map_err(|e| target_error(ACTION, secret, &e))?;
        let secrets = password_forms(new_password, session.mode);
        execute(session, &retain).await.map_err(|e| password_error(ACTION, secret, &e, &secrets))?;
        Ok(())
    }

    async fn prepare_alternate_user(
        &self,
        master: &mut Session,
        main_user: &str,
        alternate: &DatabaseSecret,
    ) -> Result<(), Error> {
        if alternate.username == main_user {
            // The rotation returns to the main user: its privileges are its own, only the password changes.
            return set_account_passwords(master, alternate, main_user, &alternate.password).await;
        }
        prepare_clone(master, main_user, alternate).await
    }

    async fn check_alternate(
        &self,
        session: &mut Session,
        main_user: &str,
        secret: &DatabaseSecret,
    ) -> Result<(), Error> {
        self.check(session, secret).await?;
        if secret.username == main_user {
            return Ok(());
        }
        check_clone_grants(session, main_user, secret).await
    }

    async fn close(&self, session: Session) {
        session.close().await;
    }
}

/// The logged-in account changes its own password (single user, the user's own session).
async fn set_own_password(
    session: &mut Session,
    secret: &DatabaseSecret,
    password: &SecretString,
) -> Result<(), Error> {
    const ACTION: &str = "changing the password";
    let plugin = if session.server.flavour != Flavour::MariaDb && session.server.has_alter_user() {
        own_plugin(session, secret).await?
    } else {
        Plugin::Native
    };
    let change = own_password_change(&session.server, &plugin, password.expose_secret(), session.mode)
        .map_err(|detail| command_error(ACTION, secret, detail))?;
    let secrets = password_forms(password, session.mode);
    let mut sent_as_text = change.plain_text;
    match execute(session, &change.statement).await {
        Ok(()) => {}
        Err(error) if error.is_access_denied() && change.plain_text_fallback.is_some() => {
            sent_as_text = true;
            info!(
                account = %session.current_account(),
                "MySQL lets an account without the CREATE USER privilege set its own password only as text: \
                 sending it as a literal"
            );
            let fallback = change.plain_text_fallback.as_deref().unwrap_or_default();
            execute(session, fallback).await.map_err(|e| password_error(ACTION, secret, &e, &secrets))?;
        }
        Err(error) => return Err(password_error(ACTION, secret, &error, &secrets)),
    }
    info!(account = %session.current_account(), as_hash = !sent_as_text, "changed the account's own password");
    if session.server.has_dual_passwords() {
        // A secondary password kept by an earlier dual-password rotation would otherwise keep
        // working after a switch to single user. Needs APPLICATION_PASSWORD_ADMIN; best effort.
        if let Err(error) = execute(session, "ALTER USER CURRENT_USER() DISCARD OLD PASSWORD").await {
            debug!(error = %error, "could not discard a secondary password");
        }
    }
    Ok(())
}

/// The plugin of the logged-in account, from MySQL's `SHOW CREATE USER CURRENT_USER()` (which
/// every account may run for itself).
async fn own_plugin(session: &mut Session, secret: &DatabaseSecret) -> Result<Plugin, Error> {
    const ACTION: &str = "reading the account's authentication plugin";
    let rows = session.rows("SHOW CREATE USER CURRENT_USER()").await.map_err(|e| target_error(ACTION, secret, &e))?;
    // The statement holds the stored hash, which need not be UTF-8: read it as bytes.
    let statement = match rows.first().map(|row| bytes(row, 0)) {
        Some(Ok(Some(statement))) => statement,
        Some(Err(e)) => return Err(target_error(ACTION, secret, &e)),
        None | Some(Ok(None)) => {
            return Err(command_error(ACTION, secret, "SHOW CREATE USER gave no statement".into()));
        }
    };
    let statement = String::from_utf8_lossy(&statement);
    let name =
        grants::identified_with(&statement, session.mode).map_err(|detail| command_error(ACTION, secret, detail))?;
    Ok(Plugin::from_name(&name))
}

/// As a master, sets the password of every account named `user` (each host part).
async fn set_account_passwords(
    session: &mut Session,
    secret: &DatabaseSecret,
    user: &str,
    password: &SecretString,
) -> Result<(), Error> {
    const ACTION: &str = "changing the password";
    let accounts = accounts_of(session, secret, user).await?;
    if accounts.is_empty() {
        return Err(command_error(ACTION, secret, format!("there is no account with user name {user}")));
    }
    let secrets = password_forms(password, session.mode);
    if session.server.has_alter_user() {
        // One statement for every host part: the pending password must not log in from one
        // host while another still has the old one, or a retried setSecret would stop early.
        let mut specifications = Vec::with_capacity(accounts.len());
        let mut plain_text = false;
        for row in &accounts {
            let (clause, plain) = password_clause(&session.server, &row.plugin, password.expose_secret(), session.mode)
                .map_err(|detail| command_error(ACTION, secret, detail))?;
            let account = account(user, &row.host, session.mode).map_err(|d| command_error(ACTION, secret, d))?;
            specifications.push(format!("{account} {clause}"));
            plain_text |= plain;
        }
        let statement = format!("ALTER USER {}", specifications.join(", "));
        execute(session, &statement).await.map_err(|e| password_error(ACTION, secret, &e, &secrets))?;
        info!(user, hosts = accounts.len(), as_hash = !plain_text, "set the account's password on every host");
        return Ok(());
    }
    for account in &accounts {
        let change = account_password_change(
            &session.server,
            user,
            &account.host,
            &account.plugin,
            password.expose_secret(),
            session.mode,
        )
        .map_err(|detail| command_error(ACTION, secret, detail))?;
        execute(session, &change.statement).await.map_err(|e| password_error(ACTION, secret, &e, &secrets))?;
        info!(user, host = %account.host, as_hash = !change.plain_text, "set the account's password");
    }
    Ok(())
}

/// A row of `mysql.user`.
#[derive(Debug, Clone)]
struct AccountRow {
    host: String,
    plugin: Plugin,
    attributes: AccountAttributes,
}

/// Every account with user name `user` (MariaDB roles left out), read as the master.
async fn accounts_of(session: &mut Session, secret: &DatabaseSecret, user: &str) -> Result<Vec<AccountRow>, Error> {
    const ACTION: &str = "reading mysql.user";
    let server = &session.server;
    let statement_time = if server.has_max_statement_time() { ", CAST(max_statement_time AS CHAR)" } else { ", NULL" };
    let not_a_role = if server.has_mariadb_roles() { " AND is_role = 'N'" } else { "" };
    // A literal quoted for the session rather than a bound parameter: a prepared statement
    // would cost two more round trips (prepare, close).
    let name = quote_string(user, session.mode).map_err(|d| command_error(ACTION, secret, d))?;
    let query = format!(
        "SELECT Host, plugin, ssl_type, ssl_cipher, x509_issuer, x509_subject, CAST(max_questions AS CHAR), \
         CAST(max_updates AS CHAR), CAST(max_connections AS CHAR), CAST(max_user_connections AS CHAR){statement_time} \
         FROM mysql.user WHERE User = {name}{not_a_role} ORDER BY Host"
    );
    let rows = session.rows(&query).await.map_err(|e| target_error(ACTION, secret, &e))?;
    rows.iter()
        .map(|row| {
            let field = |i| text(row, i);
            Ok(AccountRow {
                host: field(0)?,
                plugin: Plugin::from_name(&field(1)?),
                attributes: AccountAttributes {
                    ssl_type: field(2)?,
                    ssl_cipher: field(3)?,
                    x509_issuer: field(4)?,
                    x509_subject: field(5)?,
                    max_questions: field(6)?,
                    max_updates: field(7)?,
                    max_connections: field(8)?,
                    max_user_connections: field(9)?,
                    max_statement_time: optional_text(row, 10)?,
                },
            })
        })
        .collect::<Result<_, DbError>>()
        .map_err(|e| target_error(ACTION, secret, &e))
}

/// Creates the clone of `main_user` on each host part the main user has, gives it the main
/// account's TLS requirements and limits, replays every privilege, role, default role and
/// proxy grant of the main account that the clone lacks, and sets the clone's password last.
///
/// Account statements commit one by one. The engine skips setSecret once the pending password
/// logs in, so the pending login must work only when everything else is in place: a new clone
/// is created locked, and the statement that sets its password also unlocks it. A setSecret
/// that stops halfway leaves a clone that cannot log in yet, and the retry completes it.
async fn prepare_clone(master: &mut Session, main_user: &str, alternate: &DatabaseSecret) -> Result<(), Error> {
    const ACTION: &str = "preparing the alternate user";
    let fail = |detail: String| command_error(ACTION, alternate, detail);
    if !master.server.has_account_lock() {
        return Err(fail(format!(
            "alternating users need MySQL 5.7.6 or MariaDB 10.4.2 or later (ACCOUNT LOCK); the server is {}",
            master.server
        )));
    }
    let clone = alternate.username.as_str();
    let mains = accounts_of(master, alternate, main_user).await?;
    if mains.is_empty() {
        return Err(fail(format!("the main user {main_user} has no account on the server")));
    }
    let clones: HashMap<String, AccountRow> =
        accounts_of(master, alternate, clone).await?.into_iter().map(|a| (a.host.clone(), a)).collect();

    for main in &mains {
        let host = main.host.as_str();
        let clone_account = account(clone, host, master.mode).map_err(fail)?;
        let existing = clones.contains_key(host);
        if !existing {
            let attributes = main.attributes.clauses(master.mode).map_err(fail)?;
            let statement = format!("CREATE USER {clone_account}{attributes} ACCOUNT LOCK");
            execute(master, &statement).await.map_err(|e| statement_error(ACTION, alternate, &statement, &e))?;
            info!(user = clone, host, "created the alternate user, locked until it has every grant");
        }

        let wanted = grants_of(master, alternate, main_user, host).await?;
        let present = if existing { grants_of(master, alternate, clone, host).await? } else { Vec::new() };
        for grant in wanted.iter().filter(|grant| !present.contains(grant)) {
            let statement = grant.for_account(&clone_account);
            debug!(%statement, "replaying a grant of the main user");
            execute(master, &statement).await.map_err(|e| statement_error(ACTION, alternate, &statement, &e))?;
        }
        replay_proxies(master, alternate, (main_user, host), (clone, host)).await?;
        if master.server.has_mysql_default_roles() {
            replay_default_roles(master, alternate, (main_user, host), (clone, host)).await?;
        }
    }

    let password = alternate.password.expose_secret();
    let secrets = password_forms(&alternate.password, master.mode);
    let mut specifications = Vec::with_capacity(mains.len());
    let mut plain_text = false;
    for main in &mains {
        let host = main.host.as_str();
        let clone_account = account(clone, host, master.mode).map_err(fail)?;
        if let Some(present) = clones.get(host)
            && present.attributes != main.attributes
        {
            let attributes = main.attributes.clauses(master.mode).map_err(fail)?;
            let statement = format!("ALTER USER {clone_account}{attributes}");
            execute(master, &statement).await.map_err(|e| statement_error(ACTION, alternate, &statement, &e))?;
        }
        let (clause, plain) = password_clause(&master.server, &main.plugin, password, master.mode).map_err(fail)?;
        specifications.push(format!("{clone_account} {clause}"));
        plain_text |= plain;
    }
    // The passwords of every host part, and the unlock, in one statement: a retried setSecret
    // stops as soon as the pending password logs in, so no host may get it before the others.
    let statement = format!("ALTER USER {} ACCOUNT UNLOCK", specifications.join(", "));
    execute(master, &statement).await.map_err(|e| password_error(ACTION, alternate, &e, &secrets))?;
    info!(user = clone, hosts = mains.len(), as_hash = !plain_text, "set the alternate user's password on every host");
    Ok(())
}

/// The privilege statements of `SHOW GRANTS FOR 'user'@'host'`, accounts left out.
async fn grants_of(
    session: &mut Session,
    secret: &DatabaseSecret,
    user: &str,
    host: &str,
) -> Result<Vec<Grant>, Error> {
    const ACTION: &str = "reading grants";
    let statement =
        format!("SHOW GRANTS FOR {}", account(user, host, session.mode).map_err(|d| command_error(ACTION, secret, d))?);
    let lines = fetch_texts(session, &statement).await.map_err(|e| target_error(ACTION, secret, &e))?;
    parse_grants(&lines, user, host, session.mode).map_err(|detail| command_error(ACTION, secret, detail))
}

fn parse_grants(lines: &[String], user: &str, host: &str, mode: SqlMode) -> Result<Vec<Grant>, String> {
    let mut grants = Vec::new();
    for (number, line) in lines.iter().enumerate() {
        match parse_line(line, user, host, mode) {
            Ok(Line::Replay(grant)) => grants.push(grant),
            Ok(Line::Usage | Line::Proxy) => {}
            Err(problem) => return Err(format!("line {} of SHOW GRANTS FOR {user}@{host}: {problem}", number + 1)),
        }
    }
    Ok(grants)
}

/// Replays the PROXY grants of `main` for `clone`, read from `mysql.proxies_priv` (SHOW GRANTS
/// prints them without escaping the names).
async fn replay_proxies(
    master: &mut Session,
    secret: &DatabaseSecret,
    main: (&str, &str),
    clone: (&str, &str),
) -> Result<(), Error> {
    const ACTION: &str = "replaying PROXY grants";
    let wanted = proxies_of(master, secret, main).await?;
    if wanted.is_empty() {
        return Ok(());
    }
    let present = proxies_of(master, secret, clone).await?;
    for (proxied_user, proxied_host, with_grant) in wanted.iter().filter(|p| !present.contains(p)) {
        let statement = sql::grant_proxy((proxied_user, proxied_host), clone, *with_grant, master.mode)
            .map_err(|d| command_error(ACTION, secret, d))?;
        execute(master, &statement).await.map_err(|e| statement_error(ACTION, secret, &statement, &e))?;
    }
    Ok(())
}

async fn proxies_of(
    session: &mut Session,
    secret: &DatabaseSecret,
    (user, host): (&str, &str),
) -> Result<Vec<(String, String, bool)>, Error> {
    const ACTION: &str = "reading mysql.proxies_priv";
    let quote = |value| quote_string(value, session.mode).map_err(|d| command_error(ACTION, secret, d));
    let query = format!(
        "SELECT Proxied_user, Proxied_host, CAST(With_grant AS CHAR) FROM mysql.proxies_priv WHERE User = {} AND Host = {}",
        quote(user)?,
        quote(host)?
    );
    let rows = session.rows(&query).await.map_err(|e| target_error(ACTION, secret, &e))?;
    rows.iter()
        .map(|row| Ok((text(row, 0)?, text(row, 1)?, text(row, 2)? != "0")))
        .collect::<Result<_, DbError>>()
        .map_err(|e| target_error(ACTION, secret, &e))
}

/// MySQL 8: gives the clone the default roles of the main account (`mysql.default_roles`).
async fn replay_default_roles(
    master: &mut Session,
    secret: &DatabaseSecret,
    main: (&str, &str),
    clone: (&str, &str),
) -> Result<(), Error> {
    const ACTION: &str = "replaying default roles";
    let mut roles = Vec::new();
    for (user, host) in [main, clone] {
        let quote = |value| quote_string(value, master.mode).map_err(|d| command_error(ACTION, secret, d));
        let query = format!(
            "SELECT DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST FROM mysql.default_roles WHERE USER = {} AND HOST = {} \
             ORDER BY DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST",
            quote(user)?,
            quote(host)?
        );
        let rows = master.rows(&query).await.map_err(|e| target_error(ACTION, secret, &e))?;
        let list: Vec<(String, String)> = rows
            .iter()
            .map(|row| Ok((text(row, 0)?, text(row, 1)?)))
            .collect::<Result<_, DbError>>()
            .map_err(|e| target_error(ACTION, secret, &e))?;
        roles.push(list);
    }
    if roles[0] == roles[1] {
        return Ok(());
    }
    let statement = sql::set_default_roles(&roles[0], clone.0, clone.1, master.mode)
        .map_err(|d| command_error(ACTION, secret, d))?;
    execute(master, &statement).await.map_err(|e| statement_error(ACTION, secret, &statement, &e))
}

/// testSecret for a clone: every privilege statement of the main account on the clone's host
/// must be one of the clone's. The clone may read the main account's grants only with
/// `SELECT` on the `mysql` schema; without it only the login and the account are checked, and
/// the log says so.
async fn check_clone_grants(session: &mut Session, main_user: &str, secret: &DatabaseSecret) -> Result<(), Error> {
    const ACTION: &str = "comparing grants";
    let host = session.host.clone();
    let main_account = account(main_user, &host, session.mode).map_err(|d| command_error(ACTION, secret, d))?;
    let main_lines = match fetch_texts(session, &format!("SHOW GRANTS FOR {main_account}")).await {
        Ok(lines) => lines,
        Err(error) if error.is_access_denied() => {
            info!(
                account = %session.current_account(),
                main_user,
                "the alternate user may not read the main user's grants: checked its login and account only"
            );
            return Ok(());
        }
        Err(error) => return Err(target_error(ACTION, secret, &error)),
    };
    let own_lines =
        fetch_texts(session, "SHOW GRANTS FOR CURRENT_USER()").await.map_err(|e| target_error(ACTION, secret, &e))?;
    let mode = session.mode;
    let wanted = parse_grants(&main_lines, main_user, &host, mode).map_err(|d| command_error(ACTION, secret, d))?;
    let present = parse_grants(&own_lines, &session.user, &host, mode).map_err(|d| command_error(ACTION, secret, d))?;
    let clone_account = account(&session.user, &host, mode).map_err(|d| command_error(ACTION, secret, d))?;
    let missing: Vec<String> =
        wanted.iter().filter(|g| !present.contains(g)).map(|g| g.for_account(&clone_account)).collect();
    if !missing.is_empty() {
        return Err(command_error(
            ACTION,
            secret,
            format!("{} lacks privileges of {main_user}@{host}: {}", session.current_account(), missing.join("; ")),
        ));
    }
    info!(account = %session.current_account(), main_user, "the alternate user holds every grant of the main user");
    Ok(())
}

/// Sends one statement as text (DDL takes no bind parameters).
async fn execute(session: &mut Session, statement: &str) -> Result<(), DbError> {
    session.execute(statement).await
}

/// The first column of the first row, as text.
async fn fetch_text(session: &mut Session, statement: &str) -> Result<String, DbError> {
    let rows = session.rows(statement).await?;
    let row = rows.first().ok_or_else(|| DbError::Unreadable(format!("{statement} gave no row")))?;
    text(row, 0)
}

/// The first column of every row, as text.
async fn fetch_texts(session: &mut Session, statement: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<Row> = session.rows(statement).await?;
    rows.iter().map(|row| text(row, 0)).collect()
}

/// The error of a statement that carries no secret (a replayed grant): it is named.
fn statement_error(action: &'static str, secret: &DatabaseSecret, statement: &str, error: &DbError) -> Error {
    Error::Target {
        action,
        host: secret.host.clone(),
        port: secret.port,
        detail: format!("{statement}: {error}"),
        retryable: error.is_retryable(),
    }
}

pub(crate) fn command_error(action: &'static str, secret: &DatabaseSecret, detail: String) -> Error {
    Error::Target { action, host: secret.host.clone(), port: secret.port, detail, retryable: false }
}

fn not_own_account(session: &Session, secret: &DatabaseSecret, action: &'static str) -> Error {
    command_error(
        action,
        secret,
        format!(
            "user {} logged in as the account {}, so its own password cannot be changed safely \
             (an anonymous or proxy account matched the login)",
            secret.username,
            session.current_account()
        ),
    )
}

/// The forms in which a password can appear in a statement: as is, and quoted for the session.
fn password_forms(password: &SecretString, mode: SqlMode) -> Vec<String> {
    let plain = password.expose_secret();
    let mut forms = vec![plain.to_owned(), native_password_hash(plain)];
    if let Ok(quoted) = quote_string(plain, mode) {
        forms.push(quoted[1..quoted.len() - 1].to_owned());
    }
    forms.retain(|f| !f.is_empty());
    forms
}

/// An error of a statement that carries a password or its hash: syntax errors, which quote
/// the statement, are reported by number only, and any form of the password is cut out of
/// other messages.
fn password_error(action: &'static str, secret: &DatabaseSecret, error: &DbError, secrets: &[String]) -> Error {
    Error::Target {
        action,
        host: secret.host.clone(),
        port: secret.port,
        detail: error.redacted(secrets),
        retryable: error.is_retryable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clone_name_limit_is_what_every_server_accepts() {
        assert_eq!(<Mysql as Target>::MAX_USERNAME_BYTES, 32);
        assert_eq!(<Mysql as Target>::ENGINE.default_username_character_limit, Some(16));
    }

    #[test]
    fn password_forms_cover_what_a_message_could_quote() {
        let forms = password_forms(&SecretString::from("a'b\\c"), SqlMode::default());
        assert_eq!(forms[0], "a'b\\c");
        assert_eq!(forms[1], native_password_hash("a'b\\c"));
        assert_eq!(forms[2], "a''b\\\\c");
    }

    #[test]
    fn grants_of_a_clone_and_its_main_user_compare_equal() {
        let mode = SqlMode::default();
        let main = [
            "GRANT `reader` TO `shop`@`%`".to_owned(),
            "GRANT USAGE ON *.* TO `shop`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'"
                .to_owned(),
            "GRANT SELECT, INSERT ON `db`.`orders` TO `shop`@`%` WITH GRANT OPTION".to_owned(),
        ];
        let clone = [
            "GRANT `reader` TO `shop_clone`@`%`".to_owned(),
            "GRANT USAGE ON *.* TO `shop_clone`@`%` IDENTIFIED BY PASSWORD '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3'"
                .to_owned(),
            "GRANT SELECT, INSERT ON `db`.`orders` TO `shop_clone`@`%`".to_owned(),
        ];
        let wanted = parse_grants(&main, "shop", "%", mode).unwrap();
        let present = parse_grants(&clone, "shop_clone", "%", mode).unwrap();
        let missing: Vec<_> =
            wanted.iter().filter(|g| !present.contains(g)).map(|g| g.for_account("'c'@'%'")).collect();
        assert_eq!(missing, ["GRANT SELECT, INSERT ON `db`.`orders` TO 'c'@'%' WITH GRANT OPTION"]);
        let error = parse_grants(&main, "other", "%", mode).unwrap_err();
        assert!(error.starts_with("line 1 of SHOW GRANTS FOR other@%"), "{error}");
        assert!(!error.contains("*2470"));
    }
}
