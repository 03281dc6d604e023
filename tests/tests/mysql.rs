//! The MySQL rotation function, end to end: the real binary under `cargo lambda watch`,
//! LocalStack's Secrets Manager, and a real MariaDB server that requires TLS.

use e2e::*;
use serde_json::{Value, json};

const FUNCTION: &str = "mysql-rotation";

/// An account with a known password and a secret for it, ready to rotate.
struct Fixture {
    env: TestEnv,
    client: aws_sdk_secretsmanager::Client,
    user: String,
    host: String,
    password: String,
    secret: String,
}

impl Fixture {
    async fn new(extra: Value) -> Self {
        Self::for_account(&unique("app"), "%", extra).await
    }

    async fn for_account(user: &str, host: &str, extra: Value) -> Self {
        let env = TestEnv::from_env();
        let client = env.secrets_client();
        let password = format!("initial-{}", uuid::Uuid::new_v4().simple());
        env.mysql_create_user(user, host, &password).await;
        let mut value = json!({
            "engine": "mariadb",
            "host": "localhost",
            "port": env.mysql_port,
            "username": user,
            "password": password,
        });
        for (key, field) in extra.as_object().into_iter().flatten() {
            value[key] = field.clone();
        }
        let secret = create_secret(&client, &unique("mysql/secret"), &value).await;
        Fixture { env, client, user: user.to_owned(), host: host.to_owned(), password, secret }
    }

    async fn start_rotation(&self) -> String {
        start_rotation(&self.env, &self.client, &self.secret).await
    }

    async fn rotate(&self, token: &str) -> Result<(), (String, FunctionError)> {
        rotate(&self.env, FUNCTION, &self.secret, token).await
    }

    async fn password_of(&self, version: Option<&str>, label: &str) -> String {
        secret_value(&self.client, &self.secret, version, label).await["password"].as_str().unwrap().to_owned()
    }

    async fn logs_in(&self, password: &str) -> bool {
        self.env.mysql_logs_in(&self.user, password).await
    }

    /// The hash the server stores for the account.
    async fn stored_hash(&self) -> String {
        let sql = format!(
            "SELECT authentication_string FROM mysql.user WHERE User = {} AND Host = {}",
            mysql_literal(&self.user),
            mysql_literal(&self.host)
        );
        self.env.mysql_rows(&sql).await[0][0].clone()
    }
}

#[tokio::test]
async fn rotates_the_password_of_a_single_user() {
    let f = Fixture::new(json!({"ssl": true, "dbInstanceIdentifier": "prod-db"})).await;
    let old_version = version_with(&f.client, &f.secret, "AWSCURRENT").await.unwrap();

    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("rotation succeeds");

    let stages = stages(&f.client, &f.secret).await;
    assert_eq!(stages[&token], ["AWSCURRENT"], "the new version is current and no longer pending: {stages:?}");
    assert_eq!(stages[&old_version], ["AWSPREVIOUS"], "{stages:?}");
    assert!(stages.values().flatten().all(|l| l != "AWSPENDING"), "no version keeps AWSPENDING: {stages:?}");

    let new_password = f.password_of(None, "AWSCURRENT").await;
    assert_ne!(new_password, f.password);
    assert_eq!(new_password.len(), 32);
    assert!(f.logs_in(&new_password).await, "the new password logs in over verified TLS");
    assert!(!f.logs_in(&f.password).await, "the old password is rejected");

    let current = secret_value(&f.client, &f.secret, None, "AWSCURRENT").await;
    assert_eq!(current["dbInstanceIdentifier"], "prod-db", "unknown fields are carried over");
    assert_eq!(current["ssl"], true);

    let hash = f.stored_hash().await;
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
    let f = Fixture::for_account(&user, "127.0.0.1", json!({})).await;
    assert!(f.env.mysql_hosts("").await.contains(&"localhost".to_owned()), "the anonymous account exists");

    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("rotation succeeds");

    let new_password = f.password_of(None, "AWSCURRENT").await;
    assert!(f.logs_in(&new_password).await);
    assert!(!f.logs_in(&f.password).await);
    assert_eq!(f.env.mysql_hosts(&user).await, ["127.0.0.1"], "no account was added under another host");
    assert!(!f.env.mysql_log_text().contains(&new_password));
}

/// Everything a user could see change: the stages and the database password.
async fn assert_unchanged(f: &Fixture, stages_before: &std::collections::BTreeMap<String, Vec<String>>) {
    assert_eq!(&stages(&f.client, &f.secret).await, stages_before, "Secrets Manager stages unchanged");
    assert!(f.logs_in(&f.password).await, "the database password is unchanged");
}

#[tokio::test]
async fn running_the_steps_again_with_the_same_token_changes_nothing() {
    let f = Fixture::new(json!({})).await;
    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("first rotation");
    let stages_after = stages(&f.client, &f.secret).await;
    let password = f.password_of(None, "AWSCURRENT").await;

    f.rotate(&token).await.expect("the same rotation again succeeds");
    for step in STEPS {
        invoke_step(&f.env, FUNCTION, step, &f.secret, &token).await.unwrap_or_else(|e| panic!("{step} again: {e:?}"));
    }
    assert_eq!(stages(&f.client, &f.secret).await, stages_after);
    assert_eq!(f.password_of(None, "AWSCURRENT").await, password);
    assert!(f.logs_in(&password).await);
}

#[tokio::test]
async fn each_step_run_twice_in_a_row_gives_the_same_rotation() {
    let f = Fixture::new(json!({})).await;
    let token = f.start_rotation().await;
    let create =
        json!({"Step": "createSecret", "SecretId": f.secret, "ClientRequestToken": token, "RotationToken": "opaque"});
    invoke_raw(&f.env, FUNCTION, &create).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    invoke_step(&f.env, FUNCTION, "createSecret", &f.secret, &token).await.unwrap();
    assert_eq!(f.password_of(Some(&token), "AWSPENDING").await, pending, "createSecret keeps the first pending value");
    for step in ["setSecret", "testSecret", "finishSecret"] {
        invoke_step(&f.env, FUNCTION, step, &f.secret, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
        invoke_step(&f.env, FUNCTION, step, &f.secret, &token).await.unwrap_or_else(|e| panic!("{step} again: {e:?}"));
    }
    assert_eq!(version_with(&f.client, &f.secret, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&pending).await);
    assert!(!f.logs_in(&f.password).await);
}

#[tokio::test]
async fn an_unreachable_database_is_a_retryable_error_and_the_retry_succeeds() {
    let env = TestEnv::from_env();
    let mut proxy = Proxy::start(([127, 0, 0, 1], env.mysql_port).into()).await;
    let f = Fixture::new(json!({ "port": proxy.port })).await;
    let token = f.start_rotation().await;
    invoke_step(&f.env, FUNCTION, "createSecret", &f.secret, &token).await.unwrap();
    let stages_before = stages(&f.client, &f.secret).await;

    proxy.cut().await;
    let error = invoke_step(&f.env, FUNCTION, "setSecret", &f.secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Retryable.TargetUnreachable", "{error:?}");
    assert!(error.message.starts_with(&format!("cannot reach localhost:{}", proxy.port)), "{error:?}");
    assert_unchanged(&f, &stages_before).await;

    proxy.restore().await;
    f.rotate(&token).await.expect("the retried rotation succeeds");
    assert_eq!(version_with(&f.client, &f.secret, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
}

#[tokio::test]
async fn a_certificate_for_another_host_fails_without_a_plain_text_attempt() {
    // The server's certificate names `localhost` only; 127.0.0.1 is the same server under
    // a name the certificate does not cover.
    let f = Fixture::new(json!({ "host": "127.0.0.1", "ssl": true })).await;
    let token = f.start_rotation().await;
    invoke_step(&f.env, FUNCTION, "createSecret", &f.secret, &token).await.unwrap();
    let stages_before = stages(&f.client, &f.secret).await;

    let error = invoke_step(&f.env, FUNCTION, "setSecret", &f.secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.Tls", "{error:?}");
    assert!(error.message.contains("127.0.0.1"), "{error:?}");
    assert_unchanged(&f, &stages_before).await;
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
async fn completes_a_rotation_whose_password_change_already_happened() {
    let f = Fixture::new(json!({})).await;
    let token = f.start_rotation().await;
    invoke_step(&f.env, FUNCTION, "createSecret", &f.secret, &token).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    // An earlier setSecret changed the password, then the rotation stopped.
    f.env.mysql_set_password(&f.user, &f.host, &pending).await;

    f.rotate(&token).await.expect("the rotation completes");
    assert_eq!(version_with(&f.client, &f.secret, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&pending).await);
}

#[tokio::test]
async fn logs_in_with_the_previous_password_when_the_current_one_is_rejected() {
    let f = Fixture::new(json!({})).await;
    let first = f.start_rotation().await;
    f.rotate(&first).await.expect("first rotation");
    // The database went back to the password before the first rotation (a restore, say).
    f.env.mysql_set_password(&f.user, &f.host, &f.password).await;
    assert_eq!(f.password_of(None, "AWSPREVIOUS").await, f.password);

    let second = f.start_rotation().await;
    f.rotate(&second).await.expect("second rotation logs in as AWSPREVIOUS");
    let newest = f.password_of(None, "AWSCURRENT").await;
    assert!(f.logs_in(&newest).await);
    assert!(!f.logs_in(&f.password).await);
}

#[tokio::test]
async fn dual_passwords_on_mariadb_are_refused_clearly_and_nothing_changes() {
    let f = Fixture::new(json!({"rotation_strategy": "dual-password"})).await;
    let token = f.start_rotation().await;
    let stages_before = stages(&f.client, &f.secret).await;

    let error = invoke_step(&f.env, FUNCTION, "createSecret", &f.secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    let expected = "dual passwords (RETAIN CURRENT PASSWORD) need MySQL 8.0.14 or later; the server is MariaDB 10.";
    assert!(error.message.contains(expected), "{error:?}");
    assert_unchanged(&f, &stages_before).await;
    let pending =
        f.client.get_secret_value().secret_id(&f.secret).version_id(&token).version_stage("AWSPENDING").send().await;
    assert!(pending.is_err(), "no pending value was stored, so nothing blocks a corrected rotation");
}

/// Invokes createSecret for a secret whose current value is `value`, expects `error_type` and
/// a message containing `message`, and checks nothing changed.
async fn assert_rejected_value(value: Value, error_type: &str, message: &str) {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let secret = create_secret(&client, &unique("mysql/bad"), &value).await;
    let token = start_rotation(&env, &client, &secret).await;
    let stages_before = stages(&client, &secret).await;
    let error = invoke_step(&env, FUNCTION, "createSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, error_type, "{value}: {error:?}");
    assert!(error.message.contains(message), "{value}: {:?} should say {message:?}", error.message);
    assert!(error.message.contains(&secret), "the message names the secret: {error:?}");
    assert!(!error.message.contains("s3cr3t-pw"), "the message holds no password: {error:?}");
    assert_eq!(stages(&client, &secret).await, stages_before, "nothing changed for {value}");
    let pending =
        client.get_secret_value().secret_id(&secret).version_id(&token).version_stage("AWSPENDING").send().await;
    assert!(pending.is_err(), "no pending value was stored for {value}");
}

#[tokio::test]
async fn a_malformed_secret_is_named_and_nothing_changes() {
    let good = json!({"engine": "mysql", "host": "localhost", "username": "app", "password": "s3cr3t-pw"});
    let without = |field: &str| {
        let mut value = good.clone();
        value.as_object_mut().unwrap().remove(field);
        value
    };
    let with = |field: &str, v: Value| {
        let mut value = good.clone();
        value[field] = v;
        value
    };
    assert_rejected_value(json!(["s3cr3t-pw"]), "Permanent.InvalidSecret", "is a JSON array, not an object").await;
    assert_rejected_value(without("host"), "Permanent.InvalidSecret", "required field `host` is missing").await;
    assert_rejected_value(without("username"), "Permanent.InvalidSecret", "required field `username` is missing").await;
    assert_rejected_value(without("password"), "Permanent.InvalidSecret", "required field `password` is missing").await;
    assert_rejected_value(
        with("engine", json!("postgres")),
        "Permanent.InvalidSecret",
        "field `engine` is `postgres`, but this function rotates mysql or aurora-mysql or mariadb",
    )
    .await;
    assert_rejected_value(with("port", json!("five")), "Permanent.InvalidSecret", "field `port` must be a port number")
        .await;
    assert_rejected_value(
        with("sslmode", json!("prefer")),
        "Permanent.InvalidSecret",
        "field `sslmode` must be one of",
    )
    .await;
}
