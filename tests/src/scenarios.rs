//! The end-to-end scenarios every database function must pass, written once and run for
//! each engine by `tests/postgres.rs`, `tests/mysql.rs` and `tests/redshift.rs` through
//! [`common_scenarios!`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::*;

/// A rotation function under test and the server it rotates passwords on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
    /// The Redshift function against the PostgreSQL server standing in for Redshift: its users
    /// are members of `md5_users` (md5 authentication) with passwords stored in md5 form, and
    /// their secrets use Redshift's default database, `dev`.
    Redshift,
}

impl Engine {
    pub fn function(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres-rotation",
            Engine::Mysql => "mysql-rotation",
            Engine::Redshift => "redshift-rotation",
        }
    }

    /// The secret's `engine` field.
    pub fn engine(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mariadb",
            Engine::Redshift => "redshift",
        }
    }

    pub fn port(self, env: &TestEnv) -> u16 {
        match self {
            Engine::Postgres | Engine::Redshift => env.pg_port,
            Engine::Mysql => env.mysql_port,
        }
    }

    /// Creates a user that may log in from anywhere (MySQL: `'user'@'%'`).
    pub async fn create_user(self, env: &TestEnv, user: &str, password: &str) {
        match self {
            Engine::Postgres => env.create_role(user, password).await,
            Engine::Mysql => env.mysql_create_user(user, "%", password).await,
            Engine::Redshift => env.create_redshift_user(user, password, "").await,
        }
    }

    /// Whether `user` logs in with `password` over verified TLS.
    pub async fn logs_in(self, env: &TestEnv, user: &str, password: &str) -> bool {
        match self {
            Engine::Postgres | Engine::Redshift => env.pg_logs_in(user, password).await,
            Engine::Mysql => env.mysql_logs_in(user, password).await,
        }
    }

    /// Sets a password behind the function's back, to stage half-finished rotations.
    pub async fn set_password(self, env: &TestEnv, user: &str, password: &str) {
        match self {
            Engine::Postgres => env.set_role_password(user, password).await,
            Engine::Mysql => env.mysql_set_password(user, "%", password).await,
            Engine::Redshift => env.set_redshift_password(user, password).await,
        }
    }
}

/// The PostgreSQL and MySQL functions, as the benchmark and their tests name them. Redshift is
/// an [`Engine`] only, so code that matches on `Db` keeps compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    Mysql,
}

impl From<Db> for Engine {
    fn from(db: Db) -> Engine {
        match db {
            Db::Postgres => Engine::Postgres,
            Db::Mysql => Engine::Mysql,
        }
    }
}

impl Db {
    pub fn function(self) -> &'static str {
        Engine::from(self).function()
    }

    pub fn engine(self) -> &'static str {
        Engine::from(self).engine()
    }

    pub fn port(self, env: &TestEnv) -> u16 {
        Engine::from(self).port(env)
    }

    pub async fn create_user(self, env: &TestEnv, user: &str, password: &str) {
        Engine::from(self).create_user(env, user, password).await
    }

    pub async fn logs_in(self, env: &TestEnv, user: &str, password: &str) -> bool {
        Engine::from(self).logs_in(env, user, password).await
    }

    pub async fn set_password(self, env: &TestEnv, user: &str, password: &str) {
        Engine::from(self).set_password(env, user, password).await
    }
}

/// A user with a known password and a secret for it, ready to rotate.
pub struct Fixture {
    pub db: Engine,
    pub env: TestEnv,
    pub client: aws_sdk_secretsmanager::Client,
    pub user: String,
    /// The password the user had before any rotation.
    pub password: String,
    pub secret: String,
}

impl Fixture {
    /// `extra` fields override or add to the secret's JSON.
    pub async fn new(db: impl Into<Engine>, extra: Value) -> Self {
        Fixture::with_user(db, &unique("app"), extra).await
    }

    /// For a user of the given name, which this creates with a new password.
    pub async fn with_user(db: impl Into<Engine>, user: &str, extra: Value) -> Self {
        let db = db.into();
        let env = TestEnv::from_env();
        let password = format!("initial-{}", uuid::Uuid::new_v4().simple());
        db.create_user(&env, user, &password).await;
        Fixture::for_user(db, env, user, &password, extra).await
    }

    /// For the MySQL account `'user'@'host'`, which this creates.
    pub async fn for_mysql_account(user: &str, host: &str, extra: Value) -> Self {
        let env = TestEnv::from_env();
        let password = format!("initial-{}", uuid::Uuid::new_v4().simple());
        env.mysql_create_user(user, host, &password).await;
        Fixture::for_user(Engine::Mysql, env, user, &password, extra).await
    }

    async fn for_user(db: Engine, env: TestEnv, user: &str, password: &str, extra: Value) -> Self {
        let client = env.secrets_client();
        let (user, password) = (user.to_owned(), password.to_owned());
        let mut value = json!({
            "engine": db.engine(),
            "host": "localhost",
            "port": db.port(&env),
            "username": user,
            "password": password,
        });
        overlay(&mut value, &extra);
        let secret = create_secret(&client, &unique(&format!("{}/secret", db.engine())), &value).await;
        Fixture { db, env, client, user, password, secret }
    }

    pub async fn start_rotation(&self) -> String {
        start_rotation(&self.env, &self.client, &self.secret).await
    }

    pub async fn step(&self, step: &str, token: &str) -> Result<(), FunctionError> {
        invoke_step(&self.env, self.db.function(), step, &self.secret, token).await
    }

    pub async fn rotate(&self, token: &str) -> Result<(), (String, FunctionError)> {
        rotate(&self.env, self.db.function(), &self.secret, token).await
    }

    /// For a user of the given name whose secret names `masterarn` (`extra` may override it,
    /// `"masterarn": null` removes it).
    pub async fn with_master(db: impl Into<Engine>, user: &str, masterarn: &str, extra: Value) -> Self {
        let mut fields = json!({ "masterarn": masterarn });
        overlay(&mut fields, &extra);
        Fixture::with_user(db, user, fields).await
    }

    /// Starts a rotation and runs its four steps, which must succeed; returns the token.
    pub async fn rotate_once(&self) -> String {
        let token = self.start_rotation().await;
        self.rotate(&token).await.expect("rotation succeeds");
        token
    }

    /// The username and password of the `AWSCURRENT` version.
    pub async fn current_credentials(&self) -> (String, String) {
        let value = secret_value(&self.client, &self.secret, None, "AWSCURRENT").await;
        (value["username"].as_str().unwrap().to_owned(), value["password"].as_str().unwrap().to_owned())
    }

    pub async fn password_of(&self, version: Option<&str>, label: &str) -> String {
        secret_value(&self.client, &self.secret, version, label).await["password"].as_str().unwrap().to_owned()
    }

    pub async fn logs_in(&self, password: &str) -> bool {
        self.db.logs_in(&self.env, &self.user, password).await
    }

    pub async fn stages(&self) -> BTreeMap<String, Vec<String>> {
        stages(&self.client, &self.secret).await
    }

    pub async fn current_version(&self) -> Option<String> {
        version_with(&self.client, &self.secret, "AWSCURRENT").await
    }

    /// Everything a user could see change: the stages and the database password.
    pub async fn assert_unchanged(&self, stages_before: &BTreeMap<String, Vec<String>>) {
        assert_eq!(&self.stages().await, stages_before, "Secrets Manager stages unchanged");
        assert!(self.logs_in(&self.password).await, "the database password is unchanged");
    }

    /// Whether a value is stored for the token's version (no value: nothing blocks a retry).
    pub async fn has_pending_value(&self, token: &str) -> bool {
        let pending =
            self.client.get_secret_value().secret_id(&self.secret).version_id(token).version_stage("AWSPENDING");
        pending.send().await.is_ok()
    }
}

/// Sets every field of `extra` on `value`, replacing what is there.
fn overlay(value: &mut Value, extra: &Value) {
    for (key, field) in extra.as_object().into_iter().flatten() {
        value[key] = field.clone();
    }
}

/// A complete rotation; returns the fixture and the new password for engine-specific checks.
pub async fn rotates_a_single_user(db: impl Into<Engine>) -> (Fixture, String) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({"ssl": true, "dbInstanceIdentifier": "prod-db"})).await;
    let old_version = f.current_version().await.unwrap();

    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("rotation succeeds");

    let stages = f.stages().await;
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
    f.env.assert_functions_log_hides(&[&new_password, &f.password]);
    (f, new_password)
}

pub async fn running_the_steps_again_changes_nothing(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let token = f.start_rotation().await;
    f.rotate(&token).await.expect("first rotation");
    let stages_after = f.stages().await;
    let password = f.password_of(None, "AWSCURRENT").await;

    f.rotate(&token).await.expect("the same rotation again succeeds");
    for step in STEPS {
        f.step(step, &token).await.unwrap_or_else(|e| panic!("{step} again: {e:?}"));
    }
    assert_eq!(f.stages().await, stages_after);
    assert_eq!(f.password_of(None, "AWSCURRENT").await, password);
    assert!(f.logs_in(&password).await);
}

pub async fn each_step_twice_gives_the_same_rotation(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let token = f.start_rotation().await;
    // AWS sends a RotationToken, which PutSecretValue must receive and no log may show.
    let rotation_token = format!("rotation-token-{}", uuid::Uuid::new_v4().simple());
    let create = json!({"Step": "createSecret", "SecretId": f.secret, "ClientRequestToken": token, "RotationToken": rotation_token});
    invoke_raw(&f.env, db.function(), &create).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    f.step("createSecret", &token).await.unwrap();
    assert_eq!(f.password_of(Some(&token), "AWSPENDING").await, pending, "createSecret keeps the first pending value");
    for step in ["setSecret", "testSecret", "finishSecret"] {
        f.step(step, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
        f.step(step, &token).await.unwrap_or_else(|e| panic!("{step} again: {e:?}"));
    }
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&pending).await);
    assert!(!f.logs_in(&f.password).await);
    f.env.assert_functions_log_hides(&[&rotation_token, &pending, &f.password]);
}

pub async fn an_unreachable_database_is_retryable_and_the_retry_succeeds(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let env = TestEnv::from_env();
    let mut proxy = Proxy::start(([127, 0, 0, 1], db.port(&env)).into()).await;
    let f = Fixture::new(db, json!({ "port": proxy.port })).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let stages_before = f.stages().await;

    proxy.cut().await;
    let error = f.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Retryable.TargetUnreachable", "{error:?}");
    assert!(error.message.starts_with(&format!("cannot reach localhost:{}", proxy.port)), "{error:?}");
    f.assert_unchanged(&stages_before).await;

    proxy.restore().await;
    f.rotate(&token).await.expect("the retried rotation succeeds");
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
}

pub async fn a_silent_database_times_out_retryably_and_the_retry_succeeds(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let env = TestEnv::from_env();
    let proxy = Proxy::start(([127, 0, 0, 1], db.port(&env)).into()).await;
    let f = Fixture::new(db, json!({ "port": proxy.port })).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let stages_before = f.stages().await;

    proxy.stall(true);
    let error = f.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Retryable.TargetUnreachable", "{error:?}");
    // `cargo xtask` runs the functions with CONNECT_TIMEOUT_SECONDS=3.
    assert!(error.message.contains("no answer within 3s (CONNECT_TIMEOUT_SECONDS)"), "{error:?}");
    f.assert_unchanged(&stages_before).await;

    proxy.stall(false);
    f.rotate(&token).await.expect("the retried rotation succeeds");
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
}

/// The server's certificate names `localhost` only; 127.0.0.1 is the same server under a
/// name the certificate does not cover. Returns the fixture for checks of the server's log.
pub async fn a_certificate_for_another_host_fails(db: impl Into<Engine>) -> Fixture {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({ "host": "127.0.0.1", "ssl": true })).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let stages_before = f.stages().await;

    let error = f.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.Tls", "{error:?}");
    assert!(error.message.contains("127.0.0.1"), "{error:?}");
    f.assert_unchanged(&stages_before).await;
    f
}

pub async fn completes_a_rotation_whose_password_change_already_happened(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    // An earlier setSecret changed the password, then the rotation stopped.
    db.set_password(&f.env, &f.user, &pending).await;

    f.rotate(&token).await.expect("the rotation completes");
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&pending).await);
}

pub async fn logs_in_as_previous_when_current_is_rejected(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let first = f.start_rotation().await;
    f.rotate(&first).await.expect("first rotation");
    // The database went back to the password before the first rotation (a restore, say).
    db.set_password(&f.env, &f.user, &f.password).await;
    assert_eq!(f.password_of(None, "AWSPREVIOUS").await, f.password);

    let second = f.start_rotation().await;
    f.rotate(&second).await.expect("second rotation logs in as AWSPREVIOUS");
    let newest = f.password_of(None, "AWSCURRENT").await;
    assert!(f.logs_in(&newest).await);
    assert!(!f.logs_in(&f.password).await);
}

/// Invokes createSecret for a secret whose current value is `value`, expects `error_type` and
/// a message containing `message`, and checks nothing changed.
async fn assert_rejected_value(db: Engine, value: Value, error_type: &str, message: &str) {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let secret = create_secret(&client, &unique(&format!("{}/bad", db.engine())), &value).await;
    let token = start_rotation(&env, &client, &secret).await;
    let stages_before = stages(&client, &secret).await;
    let error = invoke_step(&env, db.function(), "createSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, error_type, "{value}: {error:?}");
    assert!(error.message.contains(message), "{value}: {:?} should say {message:?}", error.message);
    assert!(error.message.contains(&secret), "the message names the secret: {error:?}");
    assert!(!error.message.contains("s3cr3t-pw"), "the message holds no password: {error:?}");
    assert_eq!(stages(&client, &secret).await, stages_before, "nothing changed for {value}");
    let pending =
        client.get_secret_value().secret_id(&secret).version_id(&token).version_stage("AWSPENDING").send().await;
    assert!(pending.is_err(), "no pending value was stored for {value}");
}

/// `wrong_engine` is an engine the function must refuse, `expected` how it names its own.
pub async fn a_malformed_secret_is_named_and_nothing_changes(
    db: impl Into<Engine>,
    wrong_engine: &str,
    expected: &str,
) {
    let db: Engine = db.into();
    let good = json!({"engine": db.engine(), "host": "localhost", "username": "app", "password": "s3cr3t-pw"});
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
    let invalid = "Permanent.InvalidSecret";
    assert_rejected_value(db, json!("s3cr3t-pw"), invalid, "is a JSON string, not an object").await;
    assert_rejected_value(db, json!(["s3cr3t-pw"]), invalid, "is a JSON array, not an object").await;
    for field in ["host", "username", "password"] {
        assert_rejected_value(db, without(field), invalid, &format!("required field `{field}` is missing")).await;
    }
    let wrong = format!("field `engine` is `{wrong_engine}`, but this function rotates {expected}");
    assert_rejected_value(db, with("engine", json!(wrong_engine)), invalid, &wrong).await;
    assert_rejected_value(db, with("port", json!("five")), invalid, "field `port` must be a port number").await;
    assert_rejected_value(db, with("ssl", json!("maybe")), invalid, "field `ssl` must be true or false").await;
    assert_rejected_value(db, with("sslmode", json!("prefer")), invalid, "field `sslmode` must be one of").await;
}

pub async fn a_secret_that_is_not_json_is_named_and_nothing_changes(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let name = unique(&format!("{}/notjson", db.engine()));
    let secret = client.create_secret().name(&name).secret_string("host=db password=s3cr3t-pw").send().await.unwrap();
    let secret = secret.arn.unwrap();
    let token = start_rotation(&env, &client, &secret).await;
    let stages_before = stages(&client, &secret).await;
    let error = invoke_step(&env, db.function(), "createSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.InvalidSecret");
    assert!(error.message.contains("is not valid JSON"), "{error:?}");
    assert!(!error.message.contains("s3cr3t-pw"), "{error:?}");
    assert_eq!(stages(&client, &secret).await, stages_before);
}

pub async fn bad_events_and_tokens_are_named_and_nothing_changes(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let first = f.start_rotation().await;
    f.rotate(&first).await.expect("a rotation, so an AWSPREVIOUS version exists");
    let previous = version_with(&f.client, &f.secret, "AWSPREVIOUS").await.unwrap();
    let current_password = f.password_of(None, "AWSCURRENT").await;
    let stages_before = f.stages().await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let error = f.step("setSecret", &unknown).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.UnknownVersion");
    assert!(error.message.contains(&unknown) && error.message.contains(&f.secret), "{error:?}");

    let error = f.step("setSecret", &previous).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.VersionNotPending");
    assert!(error.message.contains("AWSPREVIOUS"), "{error:?}");

    let error = f.step("rotateSecret", &first).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.UnknownStep");
    assert!(error.message.contains("`rotateSecret`"), "{error:?}");

    let missing_secret = "no/such/secret";
    let error = invoke_step(&f.env, db.function(), "setSecret", missing_secret, &first).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.SecretsManager");
    assert!(
        error.message.starts_with(&format!(
            "Secrets Manager DescribeSecret on secret {missing_secret} failed: ResourceNotFoundException"
        )),
        "{error:?}"
    );

    for missing in ["Step", "SecretId", "ClientRequestToken"] {
        let mut event = json!({"Step": "createSecret", "SecretId": f.secret, "ClientRequestToken": first});
        event.as_object_mut().unwrap().remove(missing);
        let error = invoke_raw(&f.env, db.function(), &event).await.unwrap_err();
        assert_eq!(error.error_type, "Permanent.InvalidEvent");
        assert_eq!(error.message, format!("invalid rotation event: missing field `{missing}`"));
    }
    let event =
        json!({"Step": "createSecret", "SecretId": f.secret, "ClientRequestToken": first, "RotationToken": 987654321});
    let error = invoke_raw(&f.env, db.function(), &event).await.unwrap_err();
    assert_eq!(error.message, "invalid rotation event: field `RotationToken` must be a string");

    assert_eq!(f.stages().await, stages_before);
    assert!(f.logs_in(&current_password).await);
}

pub async fn a_secret_without_rotation_enabled_is_refused(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let value = json!({"engine": db.engine(), "host": "localhost", "username": "app", "password": "s3cr3t-pw"});
    let secret = create_secret(&client, &unique(&format!("{}/norotation", db.engine())), &value).await;
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
    let error = invoke_step(&env, db.function(), "setSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.RotationDisabled");
    assert_eq!(error.message, format!("rotation is not enabled for secret {secret}"));
    assert_eq!(stages(&client, &secret).await, stages_before);
}

/// The longest user name each function accepts, in bytes (its `Target::MAX_USERNAME_BYTES`).
fn max_username_bytes(db: Engine) -> usize {
    match db {
        Engine::Postgres => 63,
        Engine::Mysql => 32,
        Engine::Redshift => 127,
    }
}

/// Many malformed secrets and events, one table: each is refused by createSecret with the
/// error type expected and the field named, nothing is stored, the user's password is
/// unchanged, and no value (nor the password inside a URL) comes back in the message.
pub async fn every_malformed_input_is_refused_before_anything_is_stored(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let good = json!({
        "engine": db.engine(), "host": "localhost", "port": db.port(&f.env),
        "username": f.user, "password": f.password,
    });
    let leak = "Url-Pass-9z8y";
    let port = db.port(&f.env);
    let too_long = "u".repeat(max_username_bytes(db) + 1);
    let username_limit = format!("at most {}", max_username_bytes(db));
    let secrets: Vec<(&str, Value, &str)> = vec![
        ("host", json!(format!("{}://app:{leak}@localhost:{port}/db", db.engine())), "URL scheme"),
        ("host", json!(format!("app:{leak}@localhost")), "`@`"),
        ("host", json!("localhost/postgres"), "path"),
        ("host", json!("localhost?sslmode=disable"), "path or query"),
        ("host", json!(format!("localhost:{port}")), "field `port`"),
        ("host", json!(format!("[::1]:{port}")), "brackets"),
        ("host", json!("localhost\n"), "control character"),
        ("host", json!("local\u{0}host"), "control character"),
        ("host", json!("local host"), "whitespace"),
        ("host", json!("\tlocalhost"), "control character"),
        ("host", json!("lосalhost"), "non-ASCII"),
        ("host", json!("ｌocalhost"), "non-ASCII"),
        ("host", json!("h".repeat(20_000)), "at most 253"),
        ("host", json!(format!("{}.example.com", "a".repeat(64))), "label longer than 63"),
        ("host", json!("db..example.com"), "empty label"),
        ("host", json!("-db.example.com"), "`-`"),
        ("host", json!("db.example.com;"), "`;`"),
        ("host", json!("300.1.1.1"), "not an IPv4 address"),
        ("host", json!(""), "non-empty"),
        ("host", json!(["localhost"]), "a string"),
        ("port", json!(0), "1 to 65535"),
        ("port", json!(65536), "1 to 65535"),
        ("port", json!(-5432), "1 to 65535"),
        ("port", json!("54x"), "1 to 65535"),
        ("port", json!({"n": 5432}), "1 to 65535"),
        ("username", json!(too_long), &username_limit),
        ("username", json!(format!("{}\u{0}", f.user)), "NUL"),
        ("username", json!(format!("{}\nadmin", f.user)), "control character"),
        ("username", json!(format!("{}\u{1b}[0m", f.user)), "control character"),
        ("username", json!(42), "a string"),
        ("password", json!(format!("{leak}\u{0}")), "NUL"),
        ("password", json!("p".repeat(4097)), "at most 4096"),
        ("dbname", json!("db\r"), "control character"),
        ("dbname", json!("d".repeat(65)), "at most 64"),
        ("masterarn", json!("arn:aws:secretsmanager:us-east-1:000000000000:secret:x\n"), "control character"),
        ("rotation_strategy", json!("rotate-harder"), "must be one of"),
    ];
    let mut checked = 0;
    for (field, bad, rule) in &secrets {
        let mut value = good.clone();
        value[*field] = bad.clone();
        let shown = bad.to_string().chars().take(80).collect::<String>();
        let secret = create_secret(&f.client, &unique(&format!("{}/malformed", db.engine())), &value).await;
        let token = start_rotation(&f.env, &f.client, &secret).await;
        let stages_before = stages(&f.client, &secret).await;
        let error = invoke_step(&f.env, db.function(), "createSecret", &secret, &token).await.unwrap_err();
        assert_eq!(error.error_type, "Permanent.InvalidSecret", "{field}={shown}: {error:?}");
        assert!(error.message.contains(&format!("`{field}`")), "{field}={shown}: the field is not named: {error:?}");
        assert!(error.message.contains(rule), "{field}={shown}: {:?} should say {rule:?}", error.message);
        assert!(error.message.len() < 1000, "{field}={shown}: a message of {} bytes", error.message.len());
        for secret_text in [leak, f.password.as_str()] {
            assert!(!error.message.contains(secret_text), "{field}={shown}: a password is echoed: {error:?}");
        }
        if let Some(text) = bad.as_str().filter(|text| text.len() > 4) {
            assert!(!error.message.contains(text), "{field}={shown}: the value is echoed: {error:?}");
        }
        assert_eq!(stages(&f.client, &secret).await, stages_before, "{field}={shown}: stages changed");
        let pending =
            f.client.get_secret_value().secret_id(&secret).version_id(&token).version_stage("AWSPENDING").send().await;
        assert!(pending.is_err(), "{field}={shown}: a pending value was stored");
        checked += 1;
    }

    // Events Secrets Manager never sends.
    let secret = create_secret(&f.client, &unique(&format!("{}/events", db.engine())), &good).await;
    let token = start_rotation(&f.env, &f.client, &secret).await;
    let stages_before = stages(&f.client, &secret).await;
    let huge = "s".repeat(200_000);
    let events: Vec<(Value, &str, &str)> = vec![
        (json!({"Step": "createSecret", "SecretId": huge, "ClientRequestToken": token}), "InvalidEvent", "`SecretId`"),
        (
            json!({"Step": "createSecret", "SecretId": secret, "ClientRequestToken": "t".repeat(65)}),
            "InvalidEvent",
            "`ClientRequestToken`",
        ),
        (
            json!({"Step": "createSecret", "SecretId": format!("{secret}\nforged"), "ClientRequestToken": token}),
            "InvalidEvent",
            "`SecretId`",
        ),
        (
            json!({"Step": {"nested": [{"deeper": leak}]}, "SecretId": secret, "ClientRequestToken": token}),
            "InvalidEvent",
            "`Step`",
        ),
        (
            json!({"Step": "createSecret", "SecretId": {"arn": secret}, "ClientRequestToken": token}),
            "InvalidEvent",
            "`SecretId`",
        ),
        (
            json!({"Step": "createSecret", "SecretId": secret, "ClientRequestToken": [token]}),
            "InvalidEvent",
            "`ClientRequestToken`",
        ),
        (
            json!({"Step": "createSecret", "SecretId": secret, "ClientRequestToken": token, "RotationToken": {"t": leak}}),
            "InvalidEvent",
            "`RotationToken`",
        ),
        (
            json!({"Step": "x".repeat(100_000), "SecretId": secret, "ClientRequestToken": token}),
            "UnknownStep",
            "unknown rotation step",
        ),
        (json!({"Step": "", "SecretId": secret, "ClientRequestToken": token}), "InvalidEvent", "`Step`"),
        (
            json!([{"Step": "createSecret", "SecretId": secret, "ClientRequestToken": token}]),
            "InvalidEvent",
            "JSON object",
        ),
        (json!(leak), "InvalidEvent", "JSON object"),
        (json!(null), "InvalidEvent", "JSON object"),
    ];
    for (event, kind, named) in &events {
        let shown = event.to_string().chars().take(80).collect::<String>();
        let error = invoke_raw(&f.env, db.function(), event).await.unwrap_err();
        assert_eq!(error.error_type, format!("Permanent.{kind}"), "{shown}: {error:?}");
        assert!(error.message.contains(named), "{shown}: {error:?} should name {named}");
        assert!(error.message.len() < 1000, "{shown}: a message of {} bytes", error.message.len());
        assert!(!error.message.contains(leak), "{shown}: {error:?}");
        checked += 1;
    }
    assert_eq!(stages(&f.client, &secret).await, stages_before, "a malformed event changed the stages");
    assert!(f.logs_in(&f.password).await, "the user's password is unchanged");
    assert!(checked >= 40, "{checked} inputs checked");
}

/// A rotation stuck on a pending version copied from a wrong AWSCURRENT: once the operator
/// corrects AWSCURRENT, setSecret says nothing was changed and gives the command that removes
/// the stale label; after it, a new rotation succeeds.
pub async fn a_stuck_rotation_names_its_way_out_and_the_way_works(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let user = unique("app");
    let f = Fixture::with_user(db, &user, json!({"username": format!("{user}_typo")})).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.expect("the pending version is stored");
    let error = f.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.NoWorkingCredentials", "{error:?}");

    // The operator corrects AWSCURRENT; Secrets Manager retries the same token.
    let corrected = json!({
        "engine": db.engine(), "host": "localhost", "port": db.port(&f.env),
        "username": user, "password": f.password,
    });
    f.client
        .put_secret_value()
        .secret_id(&f.secret)
        .secret_string(corrected.to_string())
        .version_stages("AWSCURRENT")
        .send()
        .await
        .expect("PutSecretValue of the corrected value");
    let error = f.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.UserMismatch", "{error:?}");
    let way_out = format!(
        "aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING \
         --remove-from-version-id {token}",
        f.secret
    );
    assert!(error.message.contains(&way_out), "{:?} should say {way_out:?}", error.message);
    assert!(error.message.contains("nothing was changed"), "{error:?}");
    assert!(!error.message.contains(&f.password), "{error:?}");
    assert!(f.logs_in(&f.password).await, "nothing changed on the server");

    f.client
        .update_secret_version_stage()
        .secret_id(&f.secret)
        .version_stage("AWSPENDING")
        .remove_from_version_id(&token)
        .send()
        .await
        .expect("the way out works");
    let next = f.rotate_once().await;
    let password = f.password_of(Some(&next), "AWSCURRENT").await;
    assert!(f.logs_in(&password).await);
    assert!(!f.logs_in(&f.password).await);
}

/// `RotateSecret` with `RotateImmediately=false`: Secrets Manager stages a copy of AWSCURRENT
/// as AWSPENDING and runs testSecret alone. (LocalStack answers that call with HTTP 500, so the
/// test stages the copy itself.) The login is tested; nothing is rotated.
pub async fn test_secret_on_a_copy_of_the_current_version_passes(db: impl Into<Engine>) {
    let db: Engine = db.into();
    let f = Fixture::new(db, json!({})).await;
    let token = f.start_rotation().await;
    let current = secret_value(&f.client, &f.secret, None, "AWSCURRENT").await;
    f.client
        .put_secret_value()
        .secret_id(&f.secret)
        .client_request_token(&token)
        .secret_string(current.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("the copy is staged");
    let stages_before = f.stages().await;
    f.step("testSecret", &token).await.expect("a copy of working credentials passes testSecret");
    assert_eq!(f.stages().await, stages_before);
    assert!(f.logs_in(&f.password).await, "nothing was rotated");
}

/// Declares one `#[tokio::test]` per scenario above that needs nothing engine-specific,
/// for the engine `$db`.
#[macro_export]
macro_rules! common_scenarios {
    ($db:expr, wrong_engine: $wrong:literal, expected: $expected:literal) => {
        #[tokio::test]
        async fn running_the_steps_again_with_the_same_token_changes_nothing() {
            $crate::scenarios::running_the_steps_again_changes_nothing($db).await;
        }

        #[tokio::test]
        async fn each_step_run_twice_in_a_row_gives_the_same_rotation() {
            $crate::scenarios::each_step_twice_gives_the_same_rotation($db).await;
        }

        #[tokio::test]
        async fn an_unreachable_database_is_a_retryable_error_and_the_retry_succeeds() {
            $crate::scenarios::an_unreachable_database_is_retryable_and_the_retry_succeeds($db).await;
        }

        #[tokio::test]
        async fn a_silent_database_times_out_retryably_and_the_retry_succeeds() {
            $crate::scenarios::a_silent_database_times_out_retryably_and_the_retry_succeeds($db).await;
        }

        #[tokio::test]
        async fn completes_a_rotation_whose_password_change_already_happened() {
            $crate::scenarios::completes_a_rotation_whose_password_change_already_happened($db).await;
        }

        #[tokio::test]
        async fn logs_in_with_the_previous_password_when_the_current_one_is_rejected() {
            $crate::scenarios::logs_in_as_previous_when_current_is_rejected($db).await;
        }

        #[tokio::test]
        async fn a_malformed_secret_is_named_and_nothing_changes() {
            $crate::scenarios::a_malformed_secret_is_named_and_nothing_changes($db, $wrong, $expected).await;
        }

        #[tokio::test]
        async fn a_secret_that_is_not_json_is_named_and_nothing_changes() {
            $crate::scenarios::a_secret_that_is_not_json_is_named_and_nothing_changes($db).await;
        }

        #[tokio::test]
        async fn bad_events_and_tokens_are_named_and_nothing_changes() {
            $crate::scenarios::bad_events_and_tokens_are_named_and_nothing_changes($db).await;
        }

        #[tokio::test]
        async fn every_malformed_input_is_refused_before_anything_is_stored() {
            $crate::scenarios::every_malformed_input_is_refused_before_anything_is_stored($db).await;
        }

        #[tokio::test]
        async fn a_stuck_rotation_names_its_way_out_and_the_way_works() {
            $crate::scenarios::a_stuck_rotation_names_its_way_out_and_the_way_works($db).await;
        }

        #[tokio::test]
        async fn test_secret_on_a_copy_of_the_current_version_passes() {
            $crate::scenarios::test_secret_on_a_copy_of_the_current_version_passes($db).await;
        }

        #[tokio::test]
        async fn a_secret_without_rotation_enabled_is_refused() {
            $crate::scenarios::a_secret_without_rotation_enabled_is_refused($db).await;
        }
    };
}
