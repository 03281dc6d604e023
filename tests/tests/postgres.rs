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
