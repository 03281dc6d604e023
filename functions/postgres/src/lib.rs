//! Rotates the password of a PostgreSQL user (PostgreSQL, Aurora PostgreSQL, RDS).
//!
//! The new password reaches the server only as a SCRAM-SHA-256 verifier computed here,
//! so neither the statement nor the server's logs ever hold the plain text.

pub mod session;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::Type;

use rotation::{ConnectSettings, DatabaseSecret, EngineInfo, Error, Login, Target};

use session::{Connector, Session};

/// PostgreSQL truncates longer identifiers silently, which would alter another role.
const MAX_IDENTIFIER_BYTES: usize = 63;

pub struct Postgres {
    connector: Connector,
}

impl Target for Postgres {
    type Connection = Session;

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
        Postgres { connector: Connector::new(settings) }
    }

    async fn connect(&self, secret: &DatabaseSecret) -> Result<Login<Session>, Error> {
        self.connector.login(secret).await
    }

    async fn set_password(
        &self,
        session: &mut Session,
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
        session.batch("ALTER ROLE", secret, &format!("ALTER ROLE {role} PASSWORD {}", quote_literal(&verifier))).await
    }

    async fn check(&self, session: &mut Session, secret: &DatabaseSecret) -> Result<(), Error> {
        // session_user: the role that logged in (a clone's sessions act as the main user).
        let user = session.texts("test query", secret, "SELECT session_user::text").await?;
        match user.first() {
            Some(Some(user)) if *user == secret.username => Ok(()),
            other => Err(Error::Target {
                action: "test query",
                host: secret.host.clone(),
                port: secret.port,
                detail: format!("logged in as {}, not as {}", describe(other), secret.username),
                retryable: false,
            }),
        }
    }

    async fn prepare_alternate_user(
        &self,
        master: &mut Session,
        main_user: &str,
        alternate: &DatabaseSecret,
    ) -> Result<(), Error> {
        let statements = alternate_user_statements(master, main_user, alternate).await?;
        // One simple query is one implicit transaction and one round trip: the clone logs in
        // only once everything is in place, and a failure leaves nothing behind.
        master.batch("preparing the alternate user", alternate, &statements.join("; ")).await
    }

    async fn check_alternate(
        &self,
        session: &mut Session,
        main_user: &str,
        secret: &DatabaseSecret,
    ) -> Result<(), Error> {
        let rows = session
            .rows(
                "test query",
                secret,
                "SELECT session_user::text, current_user::text, pg_has_role(session_user, $1, 'USAGE')",
                &[(&main_user, Type::TEXT)],
            )
            .await?;
        let read = |row: &tokio_postgres::Row| -> Result<(String, String, bool), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        };
        let (session_user, current_user, member) = rows
            .first()
            .map(read)
            .transpose()
            .map_err(|e| session::target_error("test query", secret, &e))?
            .unwrap_or_default();
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

    async fn close(&self, session: Session) {
        session.close().await;
    }
}

fn describe(user: Option<&Option<String>>) -> String {
    match user {
        Some(Some(user)) => user.clone(),
        _ => "nobody (no answer)".into(),
    }
}

/// The statements that make `alternate` a working twin of `main_user`, leaving out what is
/// in place already, so a master that may only change passwords can rotate users an
/// operator created beforehand.
async fn alternate_user_statements(
    master: &Session,
    main_user: &str,
    alternate: &DatabaseSecret,
) -> Result<Vec<String>, Error> {
    const READING: &str = "reading roles";
    let invalid = |detail: String| Error::Target {
        action: "preparing the alternate user",
        host: alternate.host.clone(),
        port: alternate.port,
        detail,
        retryable: false,
    };
    let unreadable = |e: tokio_postgres::Error| session::target_error(READING, alternate, &e);
    let clone = quote_identifier(&alternate.username).map_err(invalid)?;
    let main = quote_identifier(main_user).map_err(invalid)?;
    let verifier = postgres_protocol::password::scram_sha_256(alternate.password.expose_secret().as_bytes());
    let password = quote_literal(&verifier);

    // Everything about both roles in one round trip: whether each exists and may log in,
    // membership, per-role settings and connection limits.
    let rows = master
        .rows(
            READING,
            alternate,
            "SELECT r.rolname::text, r.rolcanlogin, r.rolconnlimit, \
                    COALESCE((SELECT s.setconfig FROM pg_db_role_setting s \
                              WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}'::text[]), \
                    EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                            WHERE m.member = r.oid AND g.rolname = $1) \
             FROM pg_roles r WHERE r.rolname IN ($1, $2)",
            &[(&main_user, Type::TEXT), (&alternate.username.as_str(), Type::TEXT)],
        )
        .await?;
    let mut roles = Vec::with_capacity(rows.len());
    for row in &rows {
        let role: RoleFacts = (|| {
            Ok::<_, tokio_postgres::Error>(RoleFacts {
                name: row.try_get(0)?,
                can_login: row.try_get(1)?,
                connection_limit: row.try_get(2)?,
                settings: row.try_get(3)?,
                member_of_main: row.try_get(4)?,
            })
        })()
        .map_err(unreadable)?;
        roles.push(role);
    }
    let facts = |name: &str| roles.iter().find(|r| r.name == name);
    let existing = facts(&alternate.username);

    let mut statements = Vec::new();
    match existing.map(|r| r.can_login) {
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
    let Some(main_facts) = facts(main_user) else {
        return Err(invalid(format!("the main user {main_user} of the alternating pair does not exist")));
    };
    if !existing.is_some_and(|r| r.member_of_main) {
        // Membership, not copied grants: what the main user is granted later reaches the clone.
        statements.push(format!("GRANT {main} TO {clone}"));
    }

    // Sessions of the clone act as the main user, so whatever either creates belongs to the
    // main user, and the main user's per-role settings and connection limit apply to both.
    let mut wanted = main_facts.settings.clone();
    wanted.retain(|setting| !setting.starts_with("role="));
    wanted.push(format!("role={main_user}"));
    let present = existing.map(|r| r.settings.clone()).unwrap_or_default();
    for setting in wanted.iter().filter(|s| !present.contains(s)) {
        statements.push(alter_role_set(&clone, setting).map_err(invalid)?);
    }
    if existing.map_or(-1, |r| r.connection_limit) != main_facts.connection_limit {
        statements.push(format!("ALTER ROLE {clone} CONNECTION LIMIT {}", main_facts.connection_limit));
    }
    Ok(statements)
}

/// What the catalog says about one role of an alternating pair.
struct RoleFacts {
    name: String,
    can_login: bool,
    connection_limit: i32,
    /// `name=value` entries of `ALTER ROLE ... SET` for every database.
    settings: Vec<String>,
    /// Whether the role is a member of the main user.
    member_of_main: bool,
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

/// Quotes a PostgreSQL identifier (a role or setting name): any name works, quotes and spaces
/// included; a name PostgreSQL would truncate is refused.
pub fn quote_identifier(name: &str) -> Result<String, String> {
    quote_identifier_up_to(name, MAX_IDENTIFIER_BYTES, "PostgreSQL")
}

/// As [`quote_identifier`], for a server (`label`) that keeps names up to `max_bytes` intact.
pub fn quote_identifier_up_to(name: &str, max_bytes: usize, label: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err("a name must be non-empty and hold no NUL character".into());
    }
    if name.len() > max_bytes {
        return Err(format!("name {name} is {} bytes long; {label} allows {max_bytes}", name.len()));
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
