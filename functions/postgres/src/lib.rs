//! Rotates the password of a PostgreSQL user (PostgreSQL, Aurora PostgreSQL, RDS).
//!
//! The new password reaches the server only as a SCRAM-SHA-256 verifier computed here,
//! so neither the statement nor the server's logs ever hold the plain text.

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};

use rotation::{ConnectSettings, DatabaseSecret, EngineInfo, Error, Login, Target, TlsMode};

/// SQLSTATE codes of a login the server refused: wrong password (28P01), or no such role,
/// no `LOGIN` right or no `pg_hba.conf` entry (28000).
const LOGIN_REJECTED: [&str; 2] = ["28P01", "28000"];

/// PostgreSQL truncates longer identifiers silently, which would alter another role.
const MAX_IDENTIFIER_BYTES: usize = 63;

pub struct Postgres {
    settings: ConnectSettings,
}

impl Target for Postgres {
    type Connection = PgConnection;

    const ENGINE: EngineInfo = EngineInfo {
        label: "PostgreSQL",
        engines: &["postgres", "aurora-postgresql"],
        default_port: 5432,
        default_dbname: Some("postgres"),
        default_excluded_characters: ":/@\"'\\",
        default_username_character_limit: None,
    };

    const MAX_USERNAME_BYTES: usize = MAX_IDENTIFIER_BYTES;

    fn new(settings: ConnectSettings) -> Self {
        Postgres { settings }
    }

    async fn connect(&self, secret: &DatabaseSecret) -> Result<Login<PgConnection>, Error> {
        let options = self.connect_options(secret);
        let attempt = tokio::time::timeout(self.settings.timeout, options.connect()).await;
        let error = match attempt {
            Ok(Ok(connection)) => return Ok(Login::Accepted(connection)),
            Ok(Err(error)) => error,
            Err(_elapsed) => {
                return Err(Error::Unreachable {
                    host: secret.host.clone(),
                    port: secret.port,
                    detail: format!("no answer within {:?} (CONNECT_TIMEOUT_SECONDS)", self.settings.timeout),
                });
            }
        };
        match error {
            sqlx::Error::Database(db) if db.code().is_some_and(|code| LOGIN_REJECTED.contains(&code.as_ref())) => {
                Ok(Login::Rejected)
            }
            sqlx::Error::Tls(e) => {
                Err(Error::Tls { host: secret.host.clone(), port: secret.port, detail: e.to_string() })
            }
            // rustls reports a failed handshake (bad certificate, wrong host name) as an I/O error.
            sqlx::Error::Io(e) if is_tls_failure(&e) => {
                Err(Error::Tls { host: secret.host.clone(), port: secret.port, detail: e.to_string() })
            }
            sqlx::Error::Io(e) => {
                Err(Error::Unreachable { host: secret.host.clone(), port: secret.port, detail: e.to_string() })
            }
            other => Err(target_error("login", secret, &other)),
        }
    }

    async fn set_password(
        &self,
        connection: &mut PgConnection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), Error> {
        let role = quote_identifier(&secret.username).map_err(|detail| Error::Target {
            action: "ALTER ROLE",
            host: secret.host.clone(),
            port: secret.port,
            detail,
            retryable: false,
        })?;
        let verifier = postgres_protocol::password::scram_sha_256(new_password.expose_secret().as_bytes());
        // DDL takes no bind parameters: the statement goes through the simple protocol.
        let statement = format!("ALTER ROLE {role} PASSWORD {}", quote_literal(&verifier));
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await
            .map_err(|e| target_error("ALTER ROLE", secret, &e))?;
        Ok(())
    }

    async fn check(&self, connection: &mut PgConnection, secret: &DatabaseSecret) -> Result<(), Error> {
        // session_user: the role that logged in (a clone's sessions act as the main user).
        let user: String = sqlx::query_scalar("SELECT session_user::text")
            .fetch_one(&mut *connection)
            .await
            .map_err(|e| target_error("test query", secret, &e))?;
        if user != secret.username {
            return Err(Error::Target {
                action: "test query",
                host: secret.host.clone(),
                port: secret.port,
                detail: format!("logged in as {user}, not as {}", secret.username),
                retryable: false,
            });
        }
        Ok(())
    }

    async fn prepare_alternate_user(
        &self,
        master: &mut PgConnection,
        main_user: &str,
        alternate: &DatabaseSecret,
    ) -> Result<(), Error> {
        let fail = |e: sqlx::Error| target_error("preparing the alternate user", alternate, &e);
        let mut transaction = master.begin().await.map_err(fail)?;
        for statement in alternate_user_statements(&mut transaction, main_user, alternate).await? {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *transaction).await.map_err(fail)?;
        }
        transaction.commit().await.map_err(fail)?;
        Ok(())
    }

    async fn check_alternate(
        &self,
        connection: &mut PgConnection,
        main_user: &str,
        secret: &DatabaseSecret,
    ) -> Result<(), Error> {
        let (session_user, current_user, member): (String, String, bool) =
            sqlx::query_as("SELECT session_user::text, current_user::text, pg_has_role(session_user, $1, 'USAGE')")
                .bind(main_user)
                .fetch_one(&mut *connection)
                .await
                .map_err(|e| target_error("test query", secret, &e))?;
        let problem = if session_user != secret.username {
            Some(format!("logged in as {session_user}, not as {}", secret.username))
        } else if session_user != main_user && !(member && current_user == main_user) {
            Some(format!("{session_user} does not act as {main_user}: it cannot use what {main_user} owns"))
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some(detail) => Err(Error::Target {
                action: "test query",
                host: secret.host.clone(),
                port: secret.port,
                detail,
                retryable: false,
            }),
        }
    }

    async fn close(&self, connection: PgConnection) {
        let _ = connection.close().await;
    }
}

impl Postgres {
    fn connect_options(&self, secret: &DatabaseSecret) -> PgConnectOptions {
        let ssl_mode = match secret.tls {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyCa => PgSslMode::VerifyCa,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        };
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&secret.host)
            .port(secret.port)
            .username(&secret.username)
            .password(secret.password.expose_secret())
            .ssl_mode(ssl_mode)
            .application_name("secrets-manager-rotation")
            .statement_cache_capacity(0)
            // Neither the statements nor slow ones: ALTER ROLE carries the password's verifier.
            .log_statements(tracing::log::LevelFilter::Off)
            .log_slow_statements(tracing::log::LevelFilter::Off, std::time::Duration::ZERO);
        if let Some(dbname) = &secret.dbname {
            options = options.database(dbname);
        }
        if let Some(bundle) = &self.settings.ca_bundle {
            options = options.ssl_root_cert_from_pem(bundle.to_vec());
        }
        options
    }
}

/// The statements that make `alternate` a working twin of `main_user`, leaving out what is
/// in place already, so a master that may only change passwords can rotate users an
/// operator created beforehand.
async fn alternate_user_statements(
    connection: &mut PgConnection,
    main_user: &str,
    alternate: &DatabaseSecret,
) -> Result<Vec<String>, Error> {
    let fail = |e: sqlx::Error| target_error("reading roles", alternate, &e);
    let invalid = |detail: String| Error::Target {
        action: "preparing the alternate user",
        host: alternate.host.clone(),
        port: alternate.port,
        detail,
        retryable: false,
    };
    let clone = quote_identifier(&alternate.username).map_err(invalid)?;
    let main = quote_identifier(main_user).map_err(invalid)?;
    let verifier = postgres_protocol::password::scram_sha_256(alternate.password.expose_secret().as_bytes());
    let password = quote_literal(&verifier);

    let mut statements = Vec::new();
    let existing: Option<bool> = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&alternate.username)
        .fetch_optional(&mut *connection)
        .await
        .map_err(fail)?;
    match existing {
        // The main user owns the privileges the pair shares: creating it would make an empty role.
        None if alternate.username == main_user => {
            return Err(invalid(format!("the main user {main_user} of the alternating pair does not exist")));
        }
        None => statements.push(format!("CREATE ROLE {clone} LOGIN PASSWORD {password}")),
        Some(true) => statements.push(format!("ALTER ROLE {clone} PASSWORD {password}")),
        Some(false) => statements.push(format!("ALTER ROLE {clone} LOGIN PASSWORD {password}")),
    }
    if alternate.username == main_user {
        return Ok(statements);
    }

    let is_member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
         WHERE r.rolname = $1 AND u.rolname = $2)",
    )
    .bind(main_user)
    .bind(&alternate.username)
    .fetch_one(&mut *connection)
    .await
    .map_err(fail)?;
    if !is_member {
        // Membership, not copied grants: what the main user is granted later reaches the clone.
        statements.push(format!("GRANT {main} TO {clone}"));
    }

    // Sessions of the clone act as the main user, so whatever either creates belongs to the
    // main user, and the main user's per-role settings and connection limit apply to both.
    let mut wanted: Vec<String> = role_settings(connection, main_user).await.map_err(fail)?;
    wanted.retain(|setting| !setting.starts_with("role="));
    wanted.push(format!("role={main_user}"));
    let present =
        if existing.is_some() { role_settings(connection, &alternate.username).await.map_err(fail)? } else { vec![] };
    for setting in wanted.iter().filter(|s| !present.contains(s)) {
        statements.push(alter_role_set(&clone, setting).map_err(invalid)?);
    }
    let limits: Vec<(String, i32)> =
        sqlx::query_as("SELECT rolname::text, rolconnlimit FROM pg_roles WHERE rolname IN ($1, $2)")
            .bind(main_user)
            .bind(&alternate.username)
            .fetch_all(&mut *connection)
            .await
            .map_err(fail)?;
    let limit_of = |name: &str| limits.iter().find(|(n, _)| n == name).map(|(_, l)| *l);
    if let Some(main_limit) = limit_of(main_user)
        && limit_of(&alternate.username).unwrap_or(-1) != main_limit
    {
        statements.push(format!("ALTER ROLE {clone} CONNECTION LIMIT {main_limit}"));
    }
    Ok(statements)
}

/// A role's settings for every database, as `name=value` entries.
async fn role_settings(connection: &mut PgConnection, role: &str) -> Result<Vec<String>, sqlx::Error> {
    let settings: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
         WHERE r.rolname = $1 AND s.setdatabase = 0",
    )
    .bind(role)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(settings.unwrap_or_default())
}

/// Settings that hold a list: PostgreSQL stores them flattened, and each element must be
/// given back as its own literal.
const LIST_SETTINGS: [&str; 4] =
    ["search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"];

/// `ALTER ROLE <role> SET <name> TO <value>` for a `name=value` entry of `pg_db_role_setting`.
/// Names and values come from the catalog, which the main user can write: everything is quoted.
fn alter_role_set(role: &str, setting: &str) -> Result<String, String> {
    let (name, value) = setting.split_once('=').ok_or_else(|| format!("unreadable role setting {setting}"))?;
    let values: Vec<String> = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        split_setting_list(value).iter().map(|element| quote_literal(element)).collect()
    } else {
        vec![quote_literal(value)]
    };
    Ok(format!("ALTER ROLE {role} SET {} TO {}", quote_identifier(name)?, values.join(", ")))
}

/// Splits a flattened list setting (`app, "My Schema", public`) into its elements.
fn split_setting_list(value: &str) -> Vec<String> {
    let mut elements = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => elements.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted && current.is_empty() => {}
            c => current.push(c),
        }
    }
    elements.push(current);
    elements.into_iter().map(|e| e.trim_end().to_owned()).filter(|e| !e.is_empty()).collect()
}

fn is_tls_failure(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

fn target_error(action: &'static str, secret: &DatabaseSecret, error: &sqlx::Error) -> Error {
    // Class 08 (connection), 53 (resources) and 57 (operator intervention, e.g. shutdown)
    // are conditions of the moment.
    let retryable = match error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| ["08", "53", "57"].iter().any(|class| c.starts_with(class)))
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        _ => false,
    };
    Error::Target { action, host: secret.host.clone(), port: secret.port, detail: error.to_string(), retryable }
}

/// Quotes a PostgreSQL identifier (a role or setting name): any name works, quotes and spaces
/// included; a name PostgreSQL would truncate is refused.
pub fn quote_identifier(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err("a name must be non-empty and hold no NUL character".into());
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!("name {name} is {} bytes long; PostgreSQL allows {MAX_IDENTIFIER_BYTES}", name.len()));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Quotes a string literal so that it reads the same whatever `standard_conforming_strings` says.
pub fn quote_literal(value: &str) -> String {
    let doubled = value.replace('\'', "''");
    if doubled.contains('\\') { format!("E'{}'", doubled.replace('\\', "\\\\")) } else { format!("'{doubled}'") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_any_role_name() {
        assert_eq!(quote_identifier("app").unwrap(), "\"app\"");
        assert_eq!(quote_identifier("App User").unwrap(), "\"App User\"");
        assert_eq!(quote_identifier("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote_identifier("x\"; DROP ROLE admin; --").unwrap(), "\"x\"\"; DROP ROLE admin; --\"");
        assert_eq!(quote_identifier(&"r".repeat(63)).unwrap().len(), 65);
    }

    #[test]
    fn refuses_names_postgres_would_truncate_or_cannot_hold() {
        assert!(quote_identifier(&"r".repeat(64)).unwrap_err().contains("64 bytes"));
        // 32 two-byte characters: 64 bytes although 32 characters.
        assert!(quote_identifier(&"é".repeat(32)).is_err());
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier("a\0b").is_err());
    }

    #[test]
    fn role_settings_are_given_back_quoted() {
        assert_eq!(
            alter_role_set("\"c\"", "search_path=app, \"My \"\"Schema\"\"\", public").unwrap(),
            "ALTER ROLE \"c\" SET \"search_path\" TO 'app', 'My \"Schema\"', 'public'"
        );
        assert_eq!(
            alter_role_set("\"c\"", "statement_timeout=5s").unwrap(),
            "ALTER ROLE \"c\" SET \"statement_timeout\" TO '5s'"
        );
        assert_eq!(
            alter_role_set("\"c\"", "work_mem=1'; DROP ROLE admin; --").unwrap(),
            "ALTER ROLE \"c\" SET \"work_mem\" TO '1''; DROP ROLE admin; --'"
        );
        assert!(alter_role_set("\"c\"", "no-equals-sign").is_err());
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
    }

    #[test]
    fn the_verifier_is_scram_and_holds_no_plain_password() {
        let password = "correct horse battery staple";
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
        let (head, keys) = verifier.split_once('$').and_then(|(h, rest)| Some((h, rest.split_once('$')?.1))).unwrap();
        assert_eq!(head, "SCRAM-SHA-256");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(keys.split(':').count(), 2);
        assert!(!verifier.contains(password));
        assert_eq!(quote_literal(&verifier), format!("'{verifier}'"));
    }
}
