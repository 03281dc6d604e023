//! The API-key function (`api-key-rotation`) rotating OpenBao tokens with profile
//! `openbao-token` (mode `issued`, xtask/src/api_key_profiles.rs): the same measurement as the
//! databases', with HTTPS calls to OpenBao in place of logins.
//!
//! Each secret is made just before its rotation, in the steady state of a secret rotated before:
//! two tokens created by the root token, the older staged `AWSPREVIOUS`, the newer `AWSCURRENT`
//! (`{"api_key": token, "api_key_id": accessor, "rotation": {"profile": "openbao-token"}}`). So
//! `finishSecret` revokes the `AWSPREVIOUS` token, as every rotation after the first does. After
//! the rotation is verified the bench revokes the two tokens still valid: OpenBao holds the root
//! token and at most three others whatever N, and the profile's `list` (every accessor of the
//! server, each looked up for its name) costs the same in every rotation.
//!
//! The function reaches OpenBao through a counting proxy (its profiles document is the test
//! run's with OpenBao's URL replaced by the proxy's); its client makes one connection per call,
//! so connections are HTTP calls. What they are, per step (profile `openbao-token`):
//! - createSecret: `list` (LIST auth/token/accessors), one `lookup` per accessor (the root token
//!   and the two of the secret: 3), `issue` (POST auth/token/create): 5;
//! - setSecret: none (the provider issued the key, nothing is pushed);
//! - testSecret: `test` (GET auth/token/lookup-self with the new token): 1;
//! - finishSecret: `revoke` (POST auth/token/revoke-accessor) of the `AWSPREVIOUS` token: 1.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_secretsmanager::Client;
use e2e::{STEPS, TestEnv};
use serde_json::{Value, json};

use super::floor::{self, Floor, Login};
use super::function::{self, FunctionProcess, FunctionSetup};
use super::proxy::CountingProxy;
use super::report::{API_KEY_MAX_RATIO, EngineResult, StepResult};
use super::rotation::StepSample;
use super::target_dir;
use crate::api_key_profiles::{DEFAULT_PROFILE, OPENBAO_ADMIN_SECRET};
use crate::services::Services;
use crate::tools::progress;

pub const FUNCTION: &str = "api-key-rotation";
const PROFILE: &str = "openbao-token";
const TITLE: &str = "API key (OpenBao tokens, profile openbao-token)";

pub async fn bench(secrets: usize, services: &Services, secrets_manager: &CountingProxy) -> Result<EngineResult> {
    let env = &services.env;
    let port: u16 = env
        .openbao_url
        .trim_start_matches("https://localhost:")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("OpenBao's port in {}", env.openbao_url))?;
    let openbao = CountingProxy::start(([127, 0, 0, 1], port).into()).await?;
    let profiles = profiles_through(env, openbao.port, &services.dir)?;

    let client = env.secrets_client();
    let proxied_endpoint = format!("http://127.0.0.1:{}", secrets_manager.port);
    let proxied_client = TestEnv { aws_endpoint: proxied_endpoint.clone(), ..env.clone() }.secrets_client();
    let login = Login::openbao(env, openbao.port, &env.openbao_root_token)?;
    let mut floor = Floor::new(login, proxied_client, OPENBAO_ADMIN_SECRET).await?;

    let binary = target_dir().join("release").join(FUNCTION);
    let setup = FunctionSetup {
        name: FUNCTION,
        binary: binary.clone(),
        aws_endpoint: proxied_endpoint,
        ca_path: env.ca_path.clone(),
        extra_env: vec![
            ("API_KEY_PROFILES_FILE", profiles.display().to_string()),
            ("API_KEY_DEFAULT_PROFILE", DEFAULT_PROFILE.to_owned()),
            // As services.rs sets it: the document's consumer profiles are plain HTTP to loopback.
            ("ALLOW_PLAIN_HTTP_TO_LOOPBACK", "true".to_owned()),
        ],
    };
    progress(&format!("{TITLE}: init time over {} spawns", function::INIT_RUNS));
    let init = setup.init_time().await?;

    progress(&format!(
        "{TITLE}: rotating {secrets} secrets through one {FUNCTION} process, sampling the floor between invocations"
    ));
    let log = services.dir.join(format!("bench-{FUNCTION}.log"));
    let mut process = setup.start(&log).await?;
    let cpu_before = process.cpu_time()?;
    let samples = rotate_all(env, &client, &mut process, secrets_manager, &openbao, &mut floor, secrets)
        .await
        .with_context(|| format!("the function's log is {}", log.display()))?;
    let cpu_per_rotation = (process.cpu_time()? - cpu_before) / secrets as u32;
    let peak_rss_kib = process.peak_rss_kib()?;
    process.stop().await?;
    let (call_floor, login_floor) = (floor.call_median(), floor.login_median());

    Ok(EngineResult {
        title: TITLE,
        function: FUNCTION,
        secrets,
        binary_bytes: std::fs::metadata(&binary)?.len(),
        init,
        peak_rss_kib,
        cpu_per_rotation,
        call_floor,
        login_floor,
        floor_samples: floor.samples(),
        login_label: "HTTP calls",
        max_ratio: API_KEY_MAX_RATIO,
        steps: STEPS
            .iter()
            .zip(&samples)
            .map(|(step, samples)| StepResult::new(step, samples, call_floor, login_floor))
            .collect(),
    })
}

/// The test run's profiles document with OpenBao's URL replaced by the proxy's (the same host
/// name, so the certificate still matches), written beside the services' files.
fn profiles_through(env: &TestEnv, proxy_port: u16, dir: &Path) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(&env.api_key_profiles_path)
        .with_context(|| format!("read {}", env.api_key_profiles_path))?;
    let direct = format!("{}/v1/", env.openbao_url.trim_end_matches('/'));
    ensure!(text.contains(&direct), "the profiles document has no {direct}");
    let text = text.replace(&direct, &format!("https://localhost:{proxy_port}/v1/"));
    let document: Value = serde_json::from_str(&text).context("the profiles document")?;
    ensure!(document["profiles"][PROFILE]["mode"] == "issued", "the profiles document has no issued {PROFILE}");
    let path = dir.join("bench-api-key-profiles.json");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// An OpenBao token made by the root token: (token, accessor).
struct Token {
    token: String,
    accessor: String,
}

fn create_token(env: &TestEnv) -> Token {
    let (token, accessor) = tokio::task::block_in_place(|| env.openbao_create_token(json!({})));
    Token { token, accessor }
}

fn secret_value(token: &Token) -> Value {
    json!({ "api_key": token.token, "api_key_id": token.accessor, "rotation": { "profile": PROFILE } })
}

/// Makes, rotates, verifies and cleans up `count` secrets one after the other; one sample per
/// step (in `STEPS` order) per rotation.
async fn rotate_all(
    env: &TestEnv,
    client: &Client,
    function: &mut FunctionProcess,
    secrets_manager: &CountingProxy,
    openbao: &CountingProxy,
    floor: &mut Floor,
    count: usize,
) -> Result<Vec<Vec<StepSample>>> {
    let floor_samples_per_invocation = floor::MIN_SAMPLES.div_ceil(STEPS.len() * count);
    let mut samples: Vec<Vec<StepSample>> = STEPS.iter().map(|_| Vec::with_capacity(count)).collect();
    for _ in 0..count {
        let (previous, current) = (create_token(env), create_token(env));
        let arn = e2e::create_secret(client, &e2e::unique("bench/api-key"), &secret_value(&previous)).await;
        client
            .put_secret_value()
            .secret_id(&arn)
            .secret_string(secret_value(&current).to_string())
            .send()
            .await
            .context("PutSecretValue")?;
        let token = e2e::start_rotation(env, client, &arn).await;
        for (step, step_samples) in STEPS.iter().zip(&mut samples) {
            for _ in 0..floor_samples_per_invocation {
                floor.sample().await?;
            }
            let event = json!({ "Step": step, "SecretId": arn, "ClientRequestToken": token });
            let (sm_mark, bao_mark) = (secrets_manager.mark(), openbao.mark());
            let completion = function.invoke(event).await.with_context(|| format!("{step} of {arn}"))?;
            if let Err(error) = completion.outcome {
                bail!("{step} of {arn} failed: {} {}", error["errorType"], error["errorMessage"]);
            }
            step_samples.push(StepSample {
                elapsed: completion.elapsed,
                operations: secrets_manager.operations_since(sm_mark),
                logins: openbao.connections_since(bao_mark),
            });
        }
        let issued = verify(env, client, &arn, &token, &previous, &current).await?;
        for accessor in [&current.accessor, &issued] {
            revoke(env, accessor)?;
        }
    }
    Ok(samples)
}

/// The rotation happened: the token's version is current, its key is a new live token, and the
/// key that fell off `AWSPREVIOUS` is revoked. The new key's accessor.
async fn verify(
    env: &TestEnv,
    client: &Client,
    arn: &str,
    token: &str,
    previous: &Token,
    current: &Token,
) -> Result<String> {
    let now_current = e2e::version_with(client, arn, "AWSCURRENT").await;
    ensure!(now_current.as_deref() == Some(token), "{arn}: AWSCURRENT is {now_current:?}, not the new version");
    let value = e2e::secret_value(client, arn, None, "AWSCURRENT").await;
    let key = value["api_key"].as_str().context("AWSCURRENT has no api_key")?;
    let accessor = value["api_key_id"].as_str().context("AWSCURRENT has no api_key_id")?;
    ensure!(key != current.token, "{arn}: the key did not change");
    let (new_valid, current_valid, previous_valid) = tokio::task::block_in_place(|| {
        (
            env.openbao_token_valid(key),
            env.openbao_token_valid(&current.token),
            env.openbao_token_valid(&previous.token),
        )
    });
    ensure!(new_valid, "{arn}: the new AWSCURRENT key is no live OpenBao token");
    ensure!(current_valid, "{arn}: the key now AWSPREVIOUS was revoked");
    ensure!(!previous_valid, "{arn}: the key that fell off AWSPREVIOUS was not revoked");
    Ok(accessor.to_owned())
}

fn revoke(env: &TestEnv, accessor: &str) -> Result<()> {
    let root = Some(env.openbao_root_token.as_str());
    let body = json!({ "accessor": accessor });
    let (status, answer) =
        tokio::task::block_in_place(|| env.openbao_request("POST", "auth/token/revoke-accessor", root, Some(&body)));
    ensure!(matches!(status, 200 | 204), "revoking accessor {accessor}: {status} {answer}");
    Ok(())
}
