//! The PostgreSQL rotation function, end to end: the real binary under `cargo lambda watch`,
//! LocalStack's Secrets Manager, and a real PostgreSQL server with TLS and SCRAM.

use e2e::*;
use serde_json::{Value, json};

const FUNCTION: &str = "postgres-rotation";

/// A role with a known password and a secret for it, ready to rotate.
struct Fixture {
    env: TestEnv,
    client: aws_sdk_secretsmanager::Client,
    role: String,
    password: String,
    secret: String,
}

impl Fixture {
    async fn new(extra: Value) -> Self {
        let env = TestEnv::from_env();
        let client = env.secrets_client();
        let role = unique("app");
        let password = format!("initial-{}", uuid::Uuid::new_v4().simple());
        env.create_role(&role, &password).await;
        let mut value = json!({
            "engine": "postgres",
            "host": "localhost",
            "port": env.pg_port,
            "username": role,
            "password": password,
            "dbname": "postgres",
        });
        for (key, field) in extra.as_object().into_iter().flatten() {
            value[key] = field.clone();
        }
        let secret = create_secret(&client, &unique("pg/secret"), &value).await;
        Fixture { env, client, role, password, secret }
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
    assert!(f.env.pg_logs_in(&f.role, &new_password).await, "the new password logs in over verified TLS");
    assert!(!f.env.pg_logs_in(&f.role, &f.password).await, "the old password is rejected");

    let current = secret_value(&f.client, &f.secret, None, "AWSCURRENT").await;
    assert_eq!(current["dbInstanceIdentifier"], "prod-db", "unknown fields are carried over");
    assert_eq!(current["ssl"], true);

    let log = f.env.pg_log_text();
    assert!(
        log.contains(&format!("ALTER ROLE \"{}\" PASSWORD 'SCRAM-SHA-256$", f.role)),
        "the verifier is what the server saw"
    );
    assert!(!log.contains(&new_password), "the plain-text password never reaches the server log");
}

/// Everything a user could see change: the stages and the database password.
async fn assert_unchanged(f: &Fixture, stages_before: &std::collections::BTreeMap<String, Vec<String>>) {
    assert_eq!(&stages(&f.client, &f.secret).await, stages_before, "Secrets Manager stages unchanged");
    assert!(f.env.pg_logs_in(&f.role, &f.password).await, "the database password is unchanged");
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
    assert!(f.env.pg_logs_in(&f.role, &password).await);
}

#[tokio::test]
async fn each_step_run_twice_in_a_row_gives_the_same_rotation() {
    let f = Fixture::new(json!({})).await;
    let token = f.start_rotation().await;
    // AWS sends a RotationToken, which PutSecretValue must receive.
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
    assert!(f.env.pg_logs_in(&f.role, &pending).await);
    assert!(!f.env.pg_logs_in(&f.role, &f.password).await);
}

#[tokio::test]
async fn an_unreachable_database_is_a_retryable_error_and_the_retry_succeeds() {
    let env = TestEnv::from_env();
    let mut proxy = Proxy::start(([127, 0, 0, 1], env.pg_port).into()).await;
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
    assert!(f.env.pg_logs_in(&f.role, &f.password_of(None, "AWSCURRENT").await).await);
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
    // pg_hba.conf rejects and logs every connection without TLS.
    let plain_text_attempts: Vec<_> = f
        .env
        .pg_log_text()
        .lines()
        .filter(|l| l.contains(&f.role) && l.contains("no encryption"))
        .map(str::to_owned)
        .collect();
    assert!(plain_text_attempts.is_empty(), "the server saw plain-text logins: {plain_text_attempts:?}");
}

#[tokio::test]
async fn completes_a_rotation_whose_password_change_already_happened() {
    let f = Fixture::new(json!({})).await;
    let token = f.start_rotation().await;
    invoke_step(&f.env, FUNCTION, "createSecret", &f.secret, &token).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    // An earlier setSecret changed the password, then the rotation stopped.
    f.env.set_role_password(&f.role, &pending).await;

    f.rotate(&token).await.expect("the rotation completes");
    assert_eq!(version_with(&f.client, &f.secret, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    assert!(f.env.pg_logs_in(&f.role, &pending).await);
}

#[tokio::test]
async fn logs_in_with_the_previous_password_when_the_current_one_is_rejected() {
    let f = Fixture::new(json!({})).await;
    let first = f.start_rotation().await;
    f.rotate(&first).await.expect("first rotation");
    // The database went back to the password before the first rotation (a restore, say).
    f.env.set_role_password(&f.role, &f.password).await;
    assert_eq!(f.password_of(None, "AWSPREVIOUS").await, f.password);

    let second = f.start_rotation().await;
    f.rotate(&second).await.expect("second rotation logs in as AWSPREVIOUS");
    let newest = f.password_of(None, "AWSCURRENT").await;
    assert!(f.env.pg_logs_in(&f.role, &newest).await);
    assert!(!f.env.pg_logs_in(&f.role, &f.password).await);
}

/// Invokes `step` for a secret whose current value is `value`, expects `error_type` and a
/// message containing `message`, and checks nothing changed.
async fn assert_rejected_value(value: Value, step_error_type: &str, message: &str) {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let secret = create_secret(&client, &unique("pg/bad"), &value).await;
    let token = start_rotation(&env, &client, &secret).await;
    let stages_before = stages(&client, &secret).await;
    let error = invoke_step(&env, FUNCTION, "createSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, step_error_type, "{value}: {error:?}");
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
    let good = json!({"engine": "postgres", "host": "localhost", "username": "app", "password": "s3cr3t-pw"});
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
    assert_rejected_value(json!("s3cr3t-pw"), "Permanent.InvalidSecret", "is a JSON string, not an object").await;
    assert_rejected_value(without("host"), "Permanent.InvalidSecret", "required field `host` is missing").await;
    assert_rejected_value(without("username"), "Permanent.InvalidSecret", "required field `username` is missing").await;
    assert_rejected_value(without("password"), "Permanent.InvalidSecret", "required field `password` is missing").await;
    assert_rejected_value(with("engine", json!("mysql")), "Permanent.InvalidSecret", "field `engine` is `mysql`").await;
    assert_rejected_value(with("port", json!("five")), "Permanent.InvalidSecret", "field `port` must be a port number")
        .await;
    assert_rejected_value(with("ssl", json!("maybe")), "Permanent.InvalidSecret", "field `ssl` must be true or false")
        .await;
}

#[tokio::test]
async fn a_secret_that_is_not_json_is_named_and_nothing_changes() {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let name = unique("pg/notjson");
    let secret = client.create_secret().name(&name).secret_string("host=db password=s3cr3t-pw").send().await.unwrap();
    let secret = secret.arn.unwrap();
    let token = start_rotation(&env, &client, &secret).await;
    let stages_before = stages(&client, &secret).await;
    let error = invoke_step(&env, FUNCTION, "createSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.InvalidSecret");
    assert!(error.message.contains("is not valid JSON"), "{error:?}");
    assert!(!error.message.contains("s3cr3t-pw"), "{error:?}");
    assert_eq!(stages(&client, &secret).await, stages_before);
}

#[tokio::test]
async fn bad_events_and_tokens_are_named_and_nothing_changes() {
    let f = Fixture::new(json!({})).await;
    let first = f.start_rotation().await;
    f.rotate(&first).await.expect("a rotation, so an AWSPREVIOUS version exists");
    let previous = version_with(&f.client, &f.secret, "AWSPREVIOUS").await.unwrap();
    let current_password = f.password_of(None, "AWSCURRENT").await;
    let stages_before = stages(&f.client, &f.secret).await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let error = invoke_step(&f.env, FUNCTION, "setSecret", &f.secret, &unknown).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.UnknownVersion");
    assert!(error.message.contains(&unknown) && error.message.contains(&f.secret), "{error:?}");

    let error = invoke_step(&f.env, FUNCTION, "setSecret", &f.secret, &previous).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.VersionNotPending");
    assert!(error.message.contains("AWSPREVIOUS"), "{error:?}");

    let error = invoke_step(&f.env, FUNCTION, "rotateSecret", &f.secret, &first).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.UnknownStep");
    assert!(error.message.contains("`rotateSecret`"), "{error:?}");

    for missing in ["Step", "SecretId", "ClientRequestToken"] {
        let mut event = json!({"Step": "createSecret", "SecretId": f.secret, "ClientRequestToken": first});
        event.as_object_mut().unwrap().remove(missing);
        let error = invoke_raw(&f.env, FUNCTION, &event).await.unwrap_err();
        assert_eq!(error.error_type, "Permanent.InvalidEvent");
        assert_eq!(error.message, format!("invalid rotation event: missing field `{missing}`"));
    }

    assert_eq!(stages(&f.client, &f.secret).await, stages_before);
    assert!(f.env.pg_logs_in(&f.role, &current_password).await);
}

#[tokio::test]
async fn a_secret_without_rotation_enabled_is_refused() {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let value = json!({"engine": "postgres", "host": "localhost", "username": "app", "password": "s3cr3t-pw"});
    let secret = create_secret(&client, &unique("pg/norotation"), &value).await;
    let token = uuid::Uuid::new_v4().to_string();
    client
        .put_secret_value()
        .secret_id(&secret)
        .client_request_token(&token)
        .secret_string(value.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let stages_before = stages(&client, &secret).await;
    let error = invoke_step(&env, FUNCTION, "setSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.RotationDisabled");
    assert_eq!(error.message, format!("rotation is not enabled for secret {secret}"));
    assert_eq!(stages(&client, &secret).await, stages_before);
}
