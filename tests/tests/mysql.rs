//! The MySQL rotation function, end to end: the real binary under `cargo lambda watch`,
//! LocalStack's Secrets Manager, and a real MariaDB server that requires TLS.

use e2e::scenarios::{self, Db, Fixture};
use e2e::*;
use serde_json::json;

const DB: Db = Db::Mysql;

#[tokio::test]
async fn rotates_the_password_of_a_single_user() {
    let (f, new_password) = scenarios::rotates_a_single_user(DB).await;
    let sql =
        format!("SELECT authentication_string FROM mysql.user WHERE User = {} AND Host = '%'", mysql_literal(&f.user));
    let hash = f.env.mysql_rows(&sql).await[0][0].clone();
    assert!(hash.starts_with('*') && hash.len() == 41, "{hash}");
    let log = f.env.mysql_log_text();
    assert!(log.contains(&format!("SET PASSWORD = '{hash}'")), "the hash is what the server saw");
    assert!(!log.contains(&new_password), "the plain-text password never reaches the server's general log");
}

#[tokio::test]
async fn rotates_an_account_whose_host_is_not_percent_and_whose_name_needs_quoting() {
    // The server also has the anonymous ''@'localhost' of a default install; the account is
    // 'name'@'127.0.0.1', and its name holds a quote, a backslash and a percent sign.
    let user = format!("o'b\\r%{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let f = Fixture::for_mysql_account(&user, "127.0.0.1", json!({})).await;
    assert!(f.env.mysql_hosts("").await.contains(&"localhost".to_owned()), "the anonymous account exists");

    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("rotation succeeds");

    let new_password = f.password_of(None, "AWSCURRENT").await;
    assert!(f.logs_in(&new_password).await);
    assert!(!f.logs_in(&f.password).await);
    assert_eq!(f.env.mysql_hosts(&user).await, ["127.0.0.1"], "no account was added under another host");
    assert!(!f.env.mysql_log_text().contains(&new_password));
}

#[tokio::test]
async fn a_certificate_for_another_host_fails_without_a_plain_text_attempt() {
    let f = scenarios::a_certificate_for_another_host_fails(DB).await;
    // The handshake failed before any login: the server never saw the user, with or without TLS.
    let logins: Vec<_> = f
        .env
        .mysql_log_text()
        .lines()
        .filter(|l| l.contains("Connect") && l.contains(&format!("{}@", f.user)) && !l.contains("SSL/TLS"))
        .map(str::to_owned)
        .collect();
    assert!(logins.is_empty(), "the server saw logins without TLS: {logins:?}");
}

#[tokio::test]
async fn dual_passwords_on_mariadb_are_refused_clearly_and_nothing_changes() {
    let f = Fixture::new(DB, json!({"rotation_strategy": "dual-password"})).await;
    let token = f.start_rotation().await;
    let stages_before = stages(&f.client, &f.secret).await;

    let error = f.step("createSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    let expected = "dual passwords (RETAIN CURRENT PASSWORD) need MySQL 8.0.14 or later; the server is MariaDB 10.";
    assert!(error.message.contains(expected), "{error:?}");
    assert_eq!(stages(&f.client, &f.secret).await, stages_before);
    assert!(f.logs_in(&f.password).await, "the database password is unchanged");
    let pending =
        f.client.get_secret_value().secret_id(&f.secret).version_id(&token).version_stage("AWSPENDING").send().await;
    assert!(pending.is_err(), "no pending value was stored, so nothing blocks a corrected rotation");
}

e2e::common_scenarios!(DB, wrong_engine: "postgres", expected: "mysql or aurora-mysql or mariadb");
