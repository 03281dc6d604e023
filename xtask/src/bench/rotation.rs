//! The job itself: N database users, a secret for each, rotated one after the other by one
//! long-lived function process. Every step is timed and its Secrets Manager calls and database
//! logins counted; every rotation is checked to have happened. The floor is sampled between
//! the invocations.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_secretsmanager::Client;
use e2e::scenarios::Engine;
use e2e::{STEPS, TestEnv};
use serde_json::json;

use super::floor::{self, Floor};
use super::function::FunctionProcess;
use super::proxy::CountingProxy;

/// One invocation of one step.
pub struct StepSample {
    pub elapsed: Duration,
    /// The Secrets Manager operations it called, in order.
    pub operations: Vec<String>,
    /// The database connections it opened.
    pub logins: usize,
}

/// A user with a known password and a secret that points at it through the database proxy.
pub struct BenchSecret {
    pub arn: String,
    user: String,
    password: String,
}

/// Creates `count` users and their secrets. Secrets name `localhost` (the name in the server's
/// certificate) and the proxy's port, so the function's logins pass through the proxy.
pub async fn create_secrets(
    db: Engine,
    env: &TestEnv,
    client: &Client,
    proxy_port: u16,
    count: usize,
) -> Result<Vec<BenchSecret>> {
    let mut secrets = Vec::with_capacity(count);
    for _ in 0..count {
        let user = e2e::unique("bench");
        let password = format!("initial-{}", uuid::Uuid::new_v4().simple());
        db.create_user(env, &user, &password).await;
        let value = json!({
            "engine": db.engine(),
            "host": "localhost",
            "port": proxy_port,
            "username": user,
            "password": password,
        });
        let arn = e2e::create_secret(client, &e2e::unique(&format!("bench/{}", db.engine())), &value).await;
        secrets.push(BenchSecret { arn, user, password });
    }
    Ok(secrets)
}

/// The proxies in front of Secrets Manager and of the engine's database.
pub struct Proxies<'a> {
    pub secrets_manager: &'a CountingProxy,
    pub database: &'a CountingProxy,
}

/// Rotates every secret through `function`; one sample per step (in `STEPS` order) per rotation.
/// Before each invocation, `floor` takes its samples.
pub async fn rotate_all(
    db: Engine,
    env: &TestEnv,
    client: &Client,
    function: &mut FunctionProcess,
    proxies: Proxies<'_>,
    floor: &mut Floor,
    secrets: &[BenchSecret],
) -> Result<Vec<Vec<StepSample>>> {
    let floor_samples_per_invocation = floor::MIN_SAMPLES.div_ceil(STEPS.len() * secrets.len());
    let mut samples: Vec<Vec<StepSample>> = STEPS.iter().map(|_| Vec::with_capacity(secrets.len())).collect();
    for secret in secrets {
        // As Secrets Manager does before createSecret: a version with no value, staged AWSPENDING.
        let token = e2e::start_rotation(env, client, &secret.arn).await;
        for (step, step_samples) in STEPS.iter().zip(&mut samples) {
            for _ in 0..floor_samples_per_invocation {
                floor.sample().await?;
            }
            let event = json!({ "Step": step, "SecretId": secret.arn, "ClientRequestToken": token });
            let (secrets_manager, database) = (proxies.secrets_manager, proxies.database);
            // Marked after the floor's samples, which pass through the same proxies.
            let (sm_mark, db_mark) = (secrets_manager.mark(), database.mark());
            let completion = function.invoke(event).await.with_context(|| format!("{step} of {}", secret.arn))?;
            if let Err(error) = completion.outcome {
                bail!("{step} of {} failed: {} {}", secret.arn, error["errorType"], error["errorMessage"]);
            }
            step_samples.push(StepSample {
                elapsed: completion.elapsed,
                operations: secrets_manager.operations_since(sm_mark),
                logins: database.connections_since(db_mark),
            });
        }
        verify(db, env, client, secret, &token).await?;
    }
    Ok(samples)
}

/// The rotation happened: the token's version is current and its new password logs in.
async fn verify(db: Engine, env: &TestEnv, client: &Client, secret: &BenchSecret, token: &str) -> Result<()> {
    let current = e2e::version_with(client, &secret.arn, "AWSCURRENT").await;
    ensure!(current.as_deref() == Some(token), "{}: AWSCURRENT is {current:?}, not the new version", secret.arn);
    let value = e2e::secret_value(client, &secret.arn, None, "AWSCURRENT").await;
    let password = value["password"].as_str().context("AWSCURRENT has no password")?;
    ensure!(password != secret.password, "{}: the password did not change", secret.arn);
    ensure!(
        db.logs_in(env, &secret.user, password).await,
        "{}: the new AWSCURRENT password of {} does not log in",
        secret.arn,
        secret.user
    );
    Ok(())
}
