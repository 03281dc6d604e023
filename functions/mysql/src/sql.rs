//! SQL text: literals quoted for the session's `sql_mode`, the `mysql_native_password` hash,
//! and the password statements for each server and account.

use sha1::{Digest, Sha1};

use crate::version::{Flavour, ServerVersion};

/// The parts of the session's `sql_mode` that change how SQL text reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqlMode {
    /// `NO_BACKSLASH_ESCAPES`: a backslash in a string literal is an ordinary character.
    pub no_backslash_escapes: bool,
    /// `ANSI_QUOTES` (also part of `ANSI`): `"` quotes identifiers, not strings.
    pub ansi_quotes: bool,
}

impl SqlMode {
    /// Reads `@@SESSION.sql_mode`, a comma-separated list such as `ANSI,NO_BACKSLASH_ESCAPES`.
    pub fn parse(mode: &str) -> Self {
        let mut parsed = SqlMode::default();
        for flag in mode.split(',').map(|f| f.trim().to_ascii_uppercase()) {
            match flag.as_str() {
                "NO_BACKSLASH_ESCAPES" => parsed.no_backslash_escapes = true,
                // ANSI is a combination mode that includes ANSI_QUOTES; servers show it expanded
                // too, but accept it either way.
                "ANSI_QUOTES" | "ANSI" => parsed.ansi_quotes = true,
                _ => {}
            }
        }
        parsed
    }
}

/// Quotes a string literal so that the server reads back exactly `value` in this session:
/// quotes are doubled (read the same in every mode), and backslashes are doubled unless
/// `NO_BACKSLASH_ESCAPES` makes them ordinary characters. A NUL character is refused.
pub fn quote_string(value: &str, mode: SqlMode) -> Result<String, String> {
    if value.contains('\0') {
        return Err("a value holds a NUL character, which no account name or password may hold".into());
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' if !mode.no_backslash_escapes => quoted.push_str("\\\\"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    Ok(quoted)
}

/// An account name, `'user'@'host'`, with both parts quoted as string literals.
pub fn account(user: &str, host: &str, mode: SqlMode) -> Result<String, String> {
    Ok(format!("{}@{}", quote_string(user, mode)?, quote_string(host, mode)?))
}

/// The `mysql_native_password` hash of a password: `*` and the upper-case hex of
/// SHA1(SHA1(password)), what `PASSWORD()` computes on the server and `mysql.user` stores.
pub fn native_password_hash(password: &str) -> String {
    let digest = Sha1::digest(Sha1::digest(password.as_bytes()));
    let mut hash = String::with_capacity(41);
    hash.push('*');
    for byte in digest {
        hash.push_str(&format!("{byte:02X}"));
    }
    hash
}

/// The authentication plugin of an account, as far as the password statements care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plugin {
    /// `mysql_native_password` (or an empty plugin column, which means the same on old
    /// servers): the server accepts the hash, so the plain text never reaches it.
    Native,
    /// `caching_sha2_password` or `sha256_password`: the server must hash the plain text itself.
    Sha2(String),
    /// A plugin that does not authenticate with a password this function can set.
    Other(String),
}

impl Plugin {
    pub fn from_name(name: &str) -> Self {
        match name.trim() {
            "" | "mysql_native_password" => Plugin::Native,
            name @ ("caching_sha2_password" | "sha256_password") => Plugin::Sha2(name.to_owned()),
            other => Plugin::Other(other.to_owned()),
        }
    }
}

/// One password change: the statement to send and, when the hash form may be refused to an
/// account without the `CREATE USER` privilege, the plain-text statement to send instead.
/// Neither is ever logged or put into an error message, and `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordChange {
    pub statement: String,
    /// Sent only when `statement` fails with "access denied" (MySQL only lets an account
    /// without privileges change its own password with `IDENTIFIED BY '<text>'`).
    pub plain_text_fallback: Option<String>,
    /// Whether `statement` itself carries the plain text.
    pub plain_text: bool,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange")
            .field("has_plain_text_fallback", &self.plain_text_fallback.is_some())
            .field("plain_text", &self.plain_text)
            .finish_non_exhaustive()
    }
}

/// The statement with which the logged-in account changes its own password.
///
/// - MariaDB (every version): `SET PASSWORD = '<hash>'`. MariaDB lets every account run it for
///   itself, while its `ALTER USER`, even on `CURRENT_USER()`, needs the `CREATE USER` privilege.
/// - MySQL before 5.7.6: `SET PASSWORD = '<hash>'` (a literal there is the hash).
/// - MySQL 5.7.6 and later, `mysql_native_password`:
///   `ALTER USER CURRENT_USER() IDENTIFIED WITH mysql_native_password AS '<hash>'`, falling
///   back to `IDENTIFIED BY '<text>'`, the only form MySQL allows an account without
///   `CREATE USER` for its own password.
/// - MySQL 5.7.6 and later, `caching_sha2_password` / `sha256_password`:
///   `ALTER USER CURRENT_USER() IDENTIFIED BY '<text>'` (the server derives the salted hash).
pub fn own_password_change(
    server: &ServerVersion,
    plugin: &Plugin,
    password: &str,
    mode: SqlMode,
) -> Result<PasswordChange, String> {
    let hash = || quote_string(&native_password_hash(password), mode);
    let hashed = |statement: String| PasswordChange { statement, plain_text_fallback: None, plain_text: false };
    if server.flavour == Flavour::MariaDb || !server.has_alter_user() {
        return Ok(hashed(format!("SET PASSWORD = {}", hash()?)));
    }
    let plain = format!("ALTER USER CURRENT_USER() IDENTIFIED BY {}", quote_string(password, mode)?);
    match plugin {
        Plugin::Native => Ok(PasswordChange {
            statement: format!("ALTER USER CURRENT_USER() IDENTIFIED WITH mysql_native_password AS {}", hash()?),
            plain_text_fallback: Some(plain),
            plain_text: false,
        }),
        Plugin::Sha2(_) => Ok(PasswordChange { statement: plain, plain_text_fallback: None, plain_text: true }),
        Plugin::Other(name) => Err(unsupported_plugin(name)),
    }
}

/// The statement with which a master account sets the password of `'user'@'host'`.
///
/// - MariaDB 10.2 and later: `ALTER USER 'u'@'h' IDENTIFIED BY PASSWORD '<hash>'`.
/// - MySQL 5.7.6 and later, `mysql_native_password`:
///   `ALTER USER 'u'@'h' IDENTIFIED WITH mysql_native_password AS '<hash>'`.
/// - MySQL 5.7.6 and later, SHA-2 plugins: `ALTER USER 'u'@'h' IDENTIFIED BY '<text>'`.
/// - Older servers: `SET PASSWORD FOR 'u'@'h' = '<hash>'`.
pub fn account_password_change(
    server: &ServerVersion,
    user: &str,
    host: &str,
    plugin: &Plugin,
    password: &str,
    mode: SqlMode,
) -> Result<PasswordChange, String> {
    let account = account(user, host, mode)?;
    if !server.has_alter_user() {
        let statement =
            format!("SET PASSWORD FOR {account} = {}", quote_string(&native_password_hash(password), mode)?);
        return Ok(PasswordChange { statement, plain_text_fallback: None, plain_text: false });
    }
    let (clause, plain_text) = password_clause(server, plugin, password, mode)?;
    Ok(PasswordChange { statement: format!("ALTER USER {account} {clause}"), plain_text_fallback: None, plain_text })
}

/// The `IDENTIFIED ...` clause of `CREATE USER` / `ALTER USER` (MySQL 5.7.6, MariaDB 10.2)
/// for an account of `plugin`, and whether it carries the plain text.
pub fn password_clause(
    server: &ServerVersion,
    plugin: &Plugin,
    password: &str,
    mode: SqlMode,
) -> Result<(String, bool), String> {
    let hash = || quote_string(&native_password_hash(password), mode);
    match (server.flavour, plugin) {
        // Every MariaDB account the function can log in as uses mysql_native_password (mysql_async is
        // built without MariaDB's ed25519 and PARSEC plugins).
        (Flavour::MariaDb, _) => Ok((format!("IDENTIFIED BY PASSWORD {}", hash()?), false)),
        (_, Plugin::Native) => Ok((format!("IDENTIFIED WITH mysql_native_password AS {}", hash()?), false)),
        (_, Plugin::Sha2(name)) => Ok((format!("IDENTIFIED WITH {name} BY {}", quote_string(password, mode)?), true)),
        (_, Plugin::Other(name)) => Err(unsupported_plugin(name)),
    }
}

fn unsupported_plugin(name: &str) -> String {
    format!(
        "the account authenticates with plugin {name}; this function sets passwords of \
         mysql_native_password, caching_sha2_password and sha256_password accounts"
    )
}

/// The two statements of a dual-password rotation of the logged-in account (MySQL 8.0.14+):
/// forget the password kept by the previous rotation, then set the new one and keep the
/// current one working. MySQL accepts `RETAIN CURRENT PASSWORD` only with
/// `IDENTIFIED BY '<text>'`, never with a hash (`IDENTIFIED WITH ... AS`).
pub fn dual_password_statements(server: &ServerVersion, password: &str, mode: SqlMode) -> Result<[String; 2], String> {
    if !server.has_dual_passwords() {
        return Err(format!(
            "dual passwords (RETAIN CURRENT PASSWORD) need MySQL 8.0.14 or later; the server is {server}"
        ));
    }
    Ok([
        "ALTER USER CURRENT_USER() DISCARD OLD PASSWORD".to_owned(),
        format!("ALTER USER CURRENT_USER() IDENTIFIED BY {} RETAIN CURRENT PASSWORD", quote_string(password, mode)?),
    ])
}

/// MySQL 8: `SET DEFAULT ROLE 'r'@'h', ... TO 'user'@'host'` (or `NONE`), to give an account
/// the default roles of another (MariaDB prints its default role in `SHOW GRANTS`).
pub fn set_default_roles(roles: &[(String, String)], user: &str, host: &str, mode: SqlMode) -> Result<String, String> {
    let roles = if roles.is_empty() {
        "NONE".to_owned()
    } else {
        roles.iter().map(|(role, role_host)| account(role, role_host, mode)).collect::<Result<Vec<_>, _>>()?.join(", ")
    };
    Ok(format!("SET DEFAULT ROLE {roles} TO {}", account(user, host, mode)?))
}

/// `GRANT PROXY ON 'proxied'@'host' TO 'user'@'host' [WITH GRANT OPTION]`, from a row of
/// `mysql.proxies_priv` (servers print PROXY grants without escaping the names).
pub fn grant_proxy(
    proxied: (&str, &str),
    grantee: (&str, &str),
    with_grant: bool,
    mode: SqlMode,
) -> Result<String, String> {
    Ok(format!(
        "GRANT PROXY ON {} TO {}{}",
        account(proxied.0, proxied.1, mode)?,
        account(grantee.0, grantee.1, mode)?,
        if with_grant { " WITH GRANT OPTION" } else { "" }
    ))
}

/// What `mysql.user` says about an account beyond its password: TLS requirements and
/// resource limits, to be given to a clone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountAttributes {
    /// `ssl_type`: empty, `ANY`, `X509` or `SPECIFIED`.
    pub ssl_type: String,
    pub ssl_cipher: String,
    pub x509_issuer: String,
    pub x509_subject: String,
    pub max_questions: String,
    pub max_updates: String,
    pub max_connections: String,
    pub max_user_connections: String,
    /// MariaDB only.
    pub max_statement_time: Option<String>,
}

impl AccountAttributes {
    /// ` REQUIRE ... WITH ...` for `CREATE USER` / `ALTER USER`.
    pub fn clauses(&self, mode: SqlMode) -> Result<String, String> {
        let require = match self.ssl_type.to_ascii_uppercase().as_str() {
            "" => "NONE".to_owned(),
            "ANY" => "SSL".to_owned(),
            "X509" => "X509".to_owned(),
            "SPECIFIED" => {
                let mut parts = Vec::new();
                for (keyword, value) in
                    [("SUBJECT", &self.x509_subject), ("ISSUER", &self.x509_issuer), ("CIPHER", &self.ssl_cipher)]
                {
                    if !value.is_empty() {
                        parts.push(format!("{keyword} {}", quote_string(value, mode)?));
                    }
                }
                if parts.is_empty() { "SSL".to_owned() } else { parts.join(" AND ") }
            }
            other => return Err(format!("unknown ssl_type {other:?} in mysql.user")),
        };
        let mut limits = Vec::new();
        for (keyword, value) in [
            ("MAX_QUERIES_PER_HOUR", &self.max_questions),
            ("MAX_UPDATES_PER_HOUR", &self.max_updates),
            ("MAX_CONNECTIONS_PER_HOUR", &self.max_connections),
            ("MAX_USER_CONNECTIONS", &self.max_user_connections),
        ] {
            limits.push(format!("{keyword} {}", number(value)?));
        }
        if let Some(value) = &self.max_statement_time {
            limits.push(format!("MAX_STATEMENT_TIME {}", number(value)?));
        }
        Ok(format!(" REQUIRE {require} WITH {}", limits.join(" ")))
    }
}

/// A number read from `mysql.user`, checked before it goes into SQL text.
fn number(value: &str) -> Result<&str, String> {
    let value = value.trim();
    let mut parts = value.splitn(2, '.');
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let whole = parts.next().is_some_and(digits);
    let fraction = parts.next().is_none_or(digits);
    if whole && fraction { Ok(value) } else { Err(format!("unexpected resource limit {value:?} in mysql.user")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: SqlMode = SqlMode { no_backslash_escapes: false, ansi_quotes: false };
    const NO_BACKSLASH: SqlMode = SqlMode { no_backslash_escapes: true, ansi_quotes: false };

    fn server(text: &str) -> ServerVersion {
        ServerVersion::parse(text).unwrap()
    }

    #[test]
    fn reads_the_sql_mode() {
        assert_eq!(SqlMode::parse(""), DEFAULT);
        assert_eq!(SqlMode::parse("STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES,NO_ENGINE_SUBSTITUTION"), NO_BACKSLASH);
        let ansi = SqlMode::parse("REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ONLY_FULL_GROUP_BY,ANSI");
        assert!(ansi.ansi_quotes && !ansi.no_backslash_escapes);
        assert!(SqlMode::parse("ansi_quotes").ansi_quotes);
    }

    #[test]
    fn quotes_literals_for_a_session_with_backslash_escapes() {
        assert_eq!(quote_string("app", DEFAULT).unwrap(), "'app'");
        assert_eq!(quote_string("o'brien", DEFAULT).unwrap(), "'o''brien'");
        assert_eq!(quote_string("a\\b", DEFAULT).unwrap(), "'a\\\\b'");
        // A trailing backslash must not escape the closing quote.
        assert_eq!(quote_string("x\\", DEFAULT).unwrap(), "'x\\\\'");
        assert_eq!(quote_string("\\'; DROP USER x; --", DEFAULT).unwrap(), "'\\\\''; DROP USER x; --'");
        assert_eq!(quote_string("100%_", DEFAULT).unwrap(), "'100%_'");
    }

    #[test]
    fn quotes_literals_for_a_session_with_no_backslash_escapes() {
        assert_eq!(quote_string("o'brien", NO_BACKSLASH).unwrap(), "'o''brien'");
        assert_eq!(quote_string("a\\b", NO_BACKSLASH).unwrap(), "'a\\b'");
        assert_eq!(quote_string("x\\", NO_BACKSLASH).unwrap(), "'x\\'");
        assert_eq!(quote_string("\\'; DROP USER x; --", NO_BACKSLASH).unwrap(), "'\\''; DROP USER x; --'");
    }

    #[test]
    fn refuses_nul() {
        assert!(quote_string("a\0b", DEFAULT).is_err());
        assert!(account("a", "h\0", DEFAULT).is_err());
    }

    #[test]
    fn quotes_account_names() {
        assert_eq!(account("app", "127.0.0.1", DEFAULT).unwrap(), "'app'@'127.0.0.1'");
        assert_eq!(account("o'b\\r%", "%", DEFAULT).unwrap(), "'o''b\\\\r%'@'%'");
        assert_eq!(account("o'b\\r%", "%", NO_BACKSLASH).unwrap(), "'o''b\\r%'@'%'");
        assert_eq!(account("", "localhost", DEFAULT).unwrap(), "''@'localhost'");
    }

    #[test]
    fn hashes_as_mysql_native_password_does() {
        // Values of PASSWORD() on MariaDB 10.11.
        assert_eq!(native_password_hash("password"), "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
        assert_eq!(native_password_hash("pw1"), "*2B602296A79E0A8784ACC5C88D92E46588CCA3C3");
        assert_eq!(native_password_hash("").len(), 41);
    }

    const PASSWORD: &str = "n3w'p\\w";

    #[test]
    fn an_account_changes_its_own_password_as_a_hash_where_it_may() {
        let hash = native_password_hash(PASSWORD);
        let mariadb = own_password_change(&server("10.11.14-MariaDB"), &Plugin::Native, PASSWORD, DEFAULT).unwrap();
        assert_eq!(mariadb.statement, format!("SET PASSWORD = '{hash}'"));
        assert_eq!((mariadb.plain_text, mariadb.plain_text_fallback), (false, None));
        // Old MariaDB and MySQL: the same statement.
        for old in ["10.1.48-MariaDB", "5.6.51", "5.7.5"] {
            let change = own_password_change(&server(old), &Plugin::Native, PASSWORD, DEFAULT).unwrap();
            assert_eq!(change.statement, format!("SET PASSWORD = '{hash}'"), "{old}");
        }

        for mysql in ["5.7.44-log", "8.0.36", "8.0.mysql_aurora.3.05.2"] {
            let change = own_password_change(&server(mysql), &Plugin::Native, PASSWORD, DEFAULT).unwrap();
            assert_eq!(
                change.statement,
                format!("ALTER USER CURRENT_USER() IDENTIFIED WITH mysql_native_password AS '{hash}'"),
                "{mysql}"
            );
            assert!(!change.plain_text && !change.statement.contains(PASSWORD));
            assert_eq!(
                change.plain_text_fallback.as_deref(),
                Some("ALTER USER CURRENT_USER() IDENTIFIED BY 'n3w''p\\\\w'"),
                "{mysql}"
            );
        }
    }

    #[test]
    fn sha2_accounts_send_the_password_as_text_escaped_for_the_session() {
        let plugin = Plugin::from_name("caching_sha2_password");
        for version in ["8.0.36", "8.4.3", "9.1.0"] {
            let change = own_password_change(&server(version), &plugin, PASSWORD, DEFAULT).unwrap();
            assert_eq!(change.statement, "ALTER USER CURRENT_USER() IDENTIFIED BY 'n3w''p\\\\w'", "{version}");
            assert!(change.plain_text);
            let change = own_password_change(&server(version), &plugin, PASSWORD, NO_BACKSLASH).unwrap();
            assert_eq!(change.statement, "ALTER USER CURRENT_USER() IDENTIFIED BY 'n3w''p\\w'", "{version}");
        }
        let unknown = own_password_change(&server("8.0.36"), &Plugin::from_name("auth_socket"), PASSWORD, DEFAULT);
        assert!(unknown.unwrap_err().contains("auth_socket"));
    }

    #[test]
    fn a_master_sets_the_password_of_a_named_account() {
        let hash = native_password_hash(PASSWORD);
        let user = "o'b\\r%";
        let change =
            account_password_change(&server("10.11.14-MariaDB"), user, "127.0.0.1", &Plugin::Native, PASSWORD, DEFAULT)
                .unwrap();
        assert_eq!(change.statement, format!("ALTER USER 'o''b\\\\r%'@'127.0.0.1' IDENTIFIED BY PASSWORD '{hash}'"));
        let change =
            account_password_change(&server("8.0.36"), user, "%", &Plugin::Native, PASSWORD, NO_BACKSLASH).unwrap();
        assert_eq!(
            change.statement,
            format!("ALTER USER 'o''b\\r%'@'%' IDENTIFIED WITH mysql_native_password AS '{hash}'")
        );
        let sha2 = Plugin::from_name("caching_sha2_password");
        let change = account_password_change(&server("9.1.0"), "app", "10.0.%", &sha2, PASSWORD, DEFAULT).unwrap();
        assert_eq!(
            change.statement,
            "ALTER USER 'app'@'10.0.%' IDENTIFIED WITH caching_sha2_password BY 'n3w''p\\\\w'"
        );
        assert!(change.plain_text);
        let change =
            account_password_change(&server("10.1.48-MariaDB"), "app", "%", &Plugin::Native, PASSWORD, DEFAULT)
                .unwrap();
        assert_eq!(change.statement, format!("SET PASSWORD FOR 'app'@'%' = '{hash}'"));
    }

    #[test]
    fn dual_passwords_only_on_mysql_8_0_14_and_later() {
        let [discard, retain] = dual_password_statements(&server("8.0.36"), PASSWORD, DEFAULT).unwrap();
        assert_eq!(discard, "ALTER USER CURRENT_USER() DISCARD OLD PASSWORD");
        assert_eq!(retain, "ALTER USER CURRENT_USER() IDENTIFIED BY 'n3w''p\\\\w' RETAIN CURRENT PASSWORD");
        let [_, retain] = dual_password_statements(&server("9.1.0"), PASSWORD, NO_BACKSLASH).unwrap();
        assert_eq!(retain, "ALTER USER CURRENT_USER() IDENTIFIED BY 'n3w''p\\w' RETAIN CURRENT PASSWORD");
        assert!(dual_password_statements(&server("8.0.mysql_aurora.3.05.2"), PASSWORD, DEFAULT).is_ok());

        let refused = dual_password_statements(&server("10.11.14-MariaDB-0+deb12u2"), PASSWORD, DEFAULT).unwrap_err();
        assert_eq!(
            refused,
            "dual passwords (RETAIN CURRENT PASSWORD) need MySQL 8.0.14 or later; the server is MariaDB 10.11.14"
        );
        let refused = dual_password_statements(&server("8.0.13"), PASSWORD, DEFAULT).unwrap_err();
        assert!(refused.ends_with("the server is MySQL 8.0.13"), "{refused}");
        assert!(dual_password_statements(&server("5.7.44-log"), PASSWORD, DEFAULT).is_err());
    }

    #[test]
    fn copies_default_roles_and_proxy_grants() {
        let roles = [("reader".to_owned(), "%".to_owned()), ("o'w".to_owned(), "10.%".to_owned())];
        assert_eq!(
            set_default_roles(&roles, "app_clone", "%", DEFAULT).unwrap(),
            "SET DEFAULT ROLE 'reader'@'%', 'o''w'@'10.%' TO 'app_clone'@'%'"
        );
        assert_eq!(set_default_roles(&[], "c", "%", DEFAULT).unwrap(), "SET DEFAULT ROLE NONE TO 'c'@'%'");
        assert_eq!(
            grant_proxy(("root", "localhost"), ("c\\", "%"), true, DEFAULT).unwrap(),
            "GRANT PROXY ON 'root'@'localhost' TO 'c\\\\'@'%' WITH GRANT OPTION"
        );
        assert_eq!(
            grant_proxy(("", "%"), ("c", "h"), false, NO_BACKSLASH).unwrap(),
            "GRANT PROXY ON ''@'%' TO 'c'@'h'"
        );
    }

    #[test]
    fn copies_tls_requirements_and_limits() {
        let mut attributes = AccountAttributes {
            max_questions: "100".into(),
            max_updates: "0".into(),
            max_connections: "0".into(),
            max_user_connections: "5".into(),
            ..Default::default()
        };
        assert_eq!(
            attributes.clauses(DEFAULT).unwrap(),
            " REQUIRE NONE WITH MAX_QUERIES_PER_HOUR 100 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 5"
        );
        attributes.ssl_type = "SPECIFIED".into();
        attributes.x509_subject = "/CN=a'b\\c".into();
        attributes.x509_issuer = "/CN=ca".into();
        attributes.max_statement_time = Some("1.500000".into());
        assert_eq!(
            attributes.clauses(DEFAULT).unwrap(),
            " REQUIRE SUBJECT '/CN=a''b\\\\c' AND ISSUER '/CN=ca' WITH MAX_QUERIES_PER_HOUR 100 \
             MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 5 MAX_STATEMENT_TIME 1.500000"
        );
        attributes.ssl_type = "ANY".into();
        assert!(attributes.clauses(NO_BACKSLASH).unwrap().starts_with(" REQUIRE SSL WITH"));
        attributes.max_questions = "1; DROP USER x".into();
        assert!(attributes.clauses(DEFAULT).is_err());
    }
}
