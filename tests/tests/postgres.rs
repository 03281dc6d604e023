//! The PostgreSQL rotation function, end to end: the real binary under `cargo lambda watch`,
//! LocalStack's Secrets Manager, and a real PostgreSQL server with TLS and SCRAM.

use e2e::scenarios::{self, Db};

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
