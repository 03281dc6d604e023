//! The PostgreSQL rotation function, end to end: the real binary under `cargo lambda watch`,
//! LocalStack's Secrets Manager, and a real PostgreSQL server with TLS and SCRAM.

use e2e::scenarios::{self, Db, Fixture};
use serde_json::json;

const DB: Db = Db::Postgres;

#[tokio::test]
async fn rotates_the_password_of_a_single_user() {
    let (f, new_password) = scenarios::rotates_a_single_user(DB).await;
    let log = f.env.pg_log_text();
    assert!(
        log.contains(&format!("ALTER ROLE \"{}\" PASSWORD 'SCRAM-SHA-256$", f.user)),
        "the verifier is what the server saw"
    );
    assert!(!log.contains(&new_password), "the plain-text password never reaches the server log");
    let function_logins = function_logins(&log, &f.user);
    assert!(!function_logins.is_empty(), "the function's logins are logged");
    assert!(function_logins.iter().all(|l| l.contains("SSL enabled")), "every login used TLS: {function_logins:?}");
}

/// The server's "connection authorized" lines of the function's sessions as `user`.
fn function_logins(log: &str, user: &str) -> Vec<String> {
    let authorized = format!("connection authorized: user={user} ");
    log.lines()
        .filter(|l| l.contains(&authorized) && l.contains("application_name=secrets-manager-rotation"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn ssl_false_means_plain_text_and_only_then() {
    let f = Fixture::new(DB, json!({"ssl": false})).await;
    // pg_hba.conf lets members of plaintext_users log in without TLS.
    f.env
        .admin_sql(&format!(
            "DO $$ BEGIN CREATE ROLE plaintext_users NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT plaintext_users TO \"{}\"",
            f.user
        ))
        .await;
    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("a rotation in plain text, as the secret asks");
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
    let function_logins = function_logins(&f.env.pg_log_text(), &f.user);
    assert!(!function_logins.is_empty());
    assert!(function_logins.iter().all(|l| !l.contains("SSL enabled")), "{function_logins:?}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    // The certificate names localhost only; verify-ca accepts it for 127.0.0.1, verify-full does not.
    let f = Fixture::new(DB, json!({"host": "127.0.0.1", "sslmode": "verify-ca"})).await;
    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("verify-ca does not check the host name");
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
}

#[tokio::test]
async fn a_certificate_for_another_host_fails_without_a_plain_text_attempt() {
    let f = scenarios::a_certificate_for_another_host_fails(DB).await;
    // pg_hba.conf rejects and logs every connection without TLS.
    let plain_text_attempts: Vec<_> = f
        .env
        .pg_log_text()
        .lines()
        .filter(|l| l.contains(&f.user) && l.contains("no encryption"))
        .map(str::to_owned)
        .collect();
    assert!(plain_text_attempts.is_empty(), "the server saw plain-text logins: {plain_text_attempts:?}");
}

e2e::common_scenarios!(DB, wrong_engine: "mysql", expected: "postgres or aurora-postgresql");

#[tokio::test]
async fn a_lock_held_on_the_role_fails_retryably_within_the_bound_and_the_retry_succeeds() {
    let f = Fixture::new(DB, json!({})).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let stages_before = f.stages().await;
    let pending = f.password_of(Some(&token), "AWSPENDING").await;

    // A long transaction that changed the role and has not committed: ALTER ROLE waits for it.
    let mut holder = f.env.hold_lock_on_role(&f.user).await;

    let started = std::time::Instant::now();
    let error = f.step("setSecret", &token).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.error_type, "Retryable.TargetCommand", "{error:?}");
    // `cargo xtask` runs the functions with STATEMENT_TIMEOUT_SECONDS=2.
    assert!(error.message.contains("lock timeout") && error.message.contains("STATEMENT_TIMEOUT_SECONDS"), "{error:?}");
    assert!(waited < std::time::Duration::from_secs(10), "setSecret gave up after {waited:?}");
    f.assert_unchanged(&stages_before).await;
    assert!(f.logs_in(&f.password).await, "the old password still logs in");
    assert!(!f.logs_in(&pending).await, "the pending password was not set");

    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);
    f.rotate(&token).await.expect("the retried rotation succeeds once the lock is gone");
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&pending).await);
    assert!(!f.logs_in(&f.password).await);
}
