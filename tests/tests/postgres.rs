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
async fn running_the_steps_again_with_the_same_token_changes_nothing() {
    scenarios::running_the_steps_again_changes_nothing(DB).await;
}

#[tokio::test]
async fn each_step_run_twice_in_a_row_gives_the_same_rotation() {
    scenarios::each_step_twice_gives_the_same_rotation(DB).await;
}

#[tokio::test]
async fn an_unreachable_database_is_a_retryable_error_and_the_retry_succeeds() {
    scenarios::an_unreachable_database_is_retryable_and_the_retry_succeeds(DB).await;
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

#[tokio::test]
async fn completes_a_rotation_whose_password_change_already_happened() {
    scenarios::completes_a_rotation_whose_password_change_already_happened(DB).await;
}

#[tokio::test]
async fn logs_in_with_the_previous_password_when_the_current_one_is_rejected() {
    scenarios::logs_in_as_previous_when_current_is_rejected(DB).await;
}

#[tokio::test]
async fn a_malformed_secret_is_named_and_nothing_changes() {
    scenarios::a_malformed_secret_is_named_and_nothing_changes(DB, "mysql", "postgres or aurora-postgresql").await;
}

#[tokio::test]
async fn a_secret_that_is_not_json_is_named_and_nothing_changes() {
    scenarios::a_secret_that_is_not_json_is_named_and_nothing_changes(DB).await;
}

#[tokio::test]
async fn bad_events_and_tokens_are_named_and_nothing_changes() {
    scenarios::bad_events_and_tokens_are_named_and_nothing_changes(DB).await;
}

#[tokio::test]
async fn a_secret_without_rotation_enabled_is_refused() {
    scenarios::a_secret_without_rotation_enabled_is_refused(DB).await;
}
