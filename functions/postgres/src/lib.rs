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
    };

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
        let user: String = sqlx::query_scalar("SELECT current_user::text")
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
            .log_statements(tracing::log::LevelFilter::Off);
        if let Some(dbname) = &secret.dbname {
            options = options.database(dbname);
        }
        if let Some(bundle) = &self.settings.ca_bundle {
            options = options.ssl_root_cert_from_pem(bundle.to_vec());
        }
        options
    }
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

/// Quotes a role name as a PostgreSQL identifier: any name works, quotes and spaces included.
pub fn quote_identifier(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err("a role name must be non-empty and hold no NUL character".into());
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!("role name {name} is {} bytes long; PostgreSQL allows {MAX_IDENTIFIER_BYTES}", name.len()));
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
