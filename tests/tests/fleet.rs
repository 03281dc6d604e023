//! A fleet rotates under throttling (issue 11): 200 PostgreSQL single-user secrets rotated by
//! 8 processes of the PostgreSQL function, whose Secrets Manager endpoint is a proxy
//! ([`e2e::throttle`]) that answers about 10 % of the requests with Secrets Manager's
//! `ThrottlingException` and delays the others by 0-20 ms. The rotations are started on
//! LocalStack directly; a work queue hands them to the processes, each running one invocation
//! at a time, and each step is retried (as Secrets Manager would) while it fails retryably.
//! Every rotation must complete: the token is current, the new password logs in (no lockout),
//! the old one is refused, and no step ever fails permanently. The proxy's counts show that the
//! SDK retried every throttled attempt but its last (`amz-sdk-request: attempt=N; max=M`).
//! A finished rotation is checked while the fleet goes on (two checks at a time); the figures
//! printed (wall time, throttled requests, step retries, error types) are benchmark figures,
//! not assertions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::runtime_api::FunctionProcess;
use e2e::throttle::{Policy, ThrottleProxy};
use e2e::*;
use serde_json::json;

const SECRETS: usize = 200;
const PROCESSES: usize = 8;
/// Retries of a step after a retryable failure (attempts: one more).
const STEP_RETRIES: usize = 5;
/// Roles and secrets created at once before the fleet starts.
const SETUP_TASKS: usize = 8;
/// Checks of finished rotations running at once, alongside the fleet.
const CHECK_TASKS: usize = 2;
const POLICY: Policy = Policy { seed: 11, throttle_per_mille: 100, max_jitter: Duration::from_millis(20) };

#[derive(Clone)]
struct Secret {
    user: String,
    password: String,
    arn: String,
}

/// What the fleet saw: per step, errorType -> count; step retries; failures (secret, what).
#[derive(Default)]
struct Record {
    errors: BTreeMap<&'static str, BTreeMap<String, usize>>,
    retries: usize,
    /// Per step: invocations and their total time.
    durations: BTreeMap<&'static str, (usize, Duration)>,
    failures: Vec<String>,
    /// The first message seen of each errorType.
    examples: BTreeMap<String, String>,
}

/// Runs `tasks` workers over `items`, each calling `work` on one item at a time.
async fn in_parallel<T, F, Fut>(items: Vec<T>, tasks: usize, work: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(Mutex::new(VecDeque::from(items)));
    let work = Arc::new(work);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (queue, work) = (queue.clone(), work.clone());
        workers.spawn(async move {
            loop {
                let Some(item) = queue.lock().unwrap().pop_front() else { break };
                work(item).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a worker panicked");
    }
}

async fn create_secrets(env: &TestEnv) -> Vec<Secret> {
    let client = env.secrets_client();
    let created = Arc::new(Mutex::new(Vec::new()));
    let (env2, created2) = (env.clone(), created.clone());
    in_parallel((0..SECRETS).collect(), SETUP_TASKS, move |_| {
        let (env, client, created) = (env2.clone(), client.clone(), created2.clone());
        async move {
            let user = unique("fleet");
            let password = format!("initial-{}", uuid::Uuid::new_v4().simple());
            env.create_role(&user, &password).await;
            let value = json!({
                "engine": "postgres",
                "host": "localhost",
                "port": env.pg_port,
                "username": user,
                "password": password,
            });
            let arn = create_secret(&client, &unique("postgres/fleet"), &value).await;
            created.lock().unwrap().push(Secret { user, password, arn });
        }
    })
    .await;
    let mut secrets = std::mem::take(&mut *created.lock().unwrap());
    secrets.sort_by(|a, b| a.user.cmp(&b.user));
    secrets
}

/// Starts the secret's rotation on LocalStack directly and runs its four steps in `process`,
/// each retried while it fails retryably.
async fn rotate(
    env: &TestEnv,
    client: &aws_sdk_secretsmanager::Client,
    process: &FunctionProcess,
    secret: &Secret,
    record: &Mutex<Record>,
) -> Option<String> {
    let token = start_rotation(env, client, &secret.arn).await;
    for step in STEPS {
        let mut attempt = 0;
        loop {
            let timed = process.step_timed(step, &secret.arn, &token).await;
            {
                let mut record = record.lock().unwrap();
                let entry = record.durations.entry(step).or_default();
                entry.0 += 1;
                entry.1 += timed.answered.saturating_duration_since(timed.served);
            }
            match timed.outcome {
                Ok(_) => break,
                Err((error_type, message)) => {
                    let mut record = record.lock().unwrap();
                    *record.errors.entry(step).or_default().entry(error_type.clone()).or_default() += 1;
                    record.examples.entry(error_type.clone()).or_insert_with(|| message.clone());
                    if !error_type.starts_with("Retryable.") || attempt == STEP_RETRIES {
                        record.failures.push(format!(
                            "{} ({}): {step} attempt {}: {error_type}: {message}",
                            secret.user,
                            secret.arn,
                            attempt + 1
                        ));
                        return None;
                    }
                    record.retries += 1;
                    attempt += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Some(token)
}

/// What is wrong with a rotated secret: AWSCURRENT is not the token, the current password does
/// not log in (a lockout), the old one still does.
async fn check(env: &TestEnv, secret: &Secret, token: &str) -> Vec<String> {
    let client = env.secrets_client();
    let current = version_with(&client, &secret.arn, "AWSCURRENT").await;
    let value = secret_value(&client, &secret.arn, None, "AWSCURRENT").await;
    let password = value["password"].as_str().unwrap_or_default().to_owned();
    let mut problems = Vec::new();
    if current.as_deref() != Some(token) {
        problems.push(format!("AWSCURRENT is {current:?}, not the token {token}"));
    }
    if password == secret.password {
        problems.push("the current password is the initial one".to_owned());
    }
    if !env.pg_logs_in(&secret.user, &password).await {
        problems.push("locked out: the current password is refused".to_owned());
    }
    if env.pg_logs_in(&secret.user, &secret.password).await {
        problems.push("the old password still logs in".to_owned());
    }
    problems.into_iter().map(|p| format!("{}: {p}", secret.user)).collect()
}

#[tokio::test]
async fn a_fleet_rotates_under_throttling() {
    let env = TestEnv::from_env();
    let setup = Instant::now();
    let secrets = create_secrets(&env).await;
    eprintln!("fleet: {SECRETS} roles and secrets created in {:.2?}", setup.elapsed());
    let proxy = ThrottleProxy::start(&env.aws_endpoint, POLICY).await;
    let mut proxied = env.clone();
    proxied.aws_endpoint = proxy.url();
    let mut processes = Vec::new();
    for _ in 0..PROCESSES {
        processes.push(FunctionProcess::start(&proxied, "postgres-rotation").await);
    }

    // The work queue: each process takes the next rotation when it finished its last.
    let queue = Arc::new(Mutex::new(secrets.iter().cloned().collect::<VecDeque<_>>()));
    let record = Arc::new(Mutex::new(Record::default()));
    // A finished rotation is checked while the fleet goes on, a few at a time: the checks'
    // logins would otherwise add a phase of their own to the test's time.
    let checks = Arc::new(tokio::sync::Semaphore::new(CHECK_TASKS));
    let checking = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for process in processes {
        let (queue, record, env) = (queue.clone(), record.clone(), env.clone());
        let (checks, checking) = (checks.clone(), checking.clone());
        workers.spawn(async move {
            let client = env.secrets_client();
            let mut handled = 0;
            loop {
                let Some(secret) = queue.lock().unwrap().pop_front() else { break };
                if let Some(token) = rotate(&env, &client, &process, &secret, &record).await {
                    let (env, checks) = (env.clone(), checks.clone());
                    checking.lock().unwrap().push(tokio::spawn(async move {
                        let _permit = checks.acquire_owned().await.expect("the semaphore stays open");
                        check(&env, &secret, &token).await
                    }));
                }
                handled += 1;
            }
            (process, handled)
        });
    }
    let mut handled = Vec::new();
    let mut processes = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (process, count) = done.expect("a worker panicked");
        handled.push(count);
        processes.push(process);
    }
    let wall = started.elapsed();
    let stats = proxy.stats();

    let record = std::mem::take(&mut *record.lock().unwrap());
    eprintln!("fleet: {SECRETS} rotations in {PROCESSES} processes: wall time {wall:.2?}");
    eprintln!("fleet: rotations per process {handled:?}");
    eprintln!(
        "fleet: proxy: {} requests on {} connections, {} throttled ({:?}), {} forwarded, {} SDK retries \
         (amz-sdk-request attempt >= 2), {} throttled last attempts, {} upstream failures",
        stats.requests,
        proxy.connections(),
        stats.throttled,
        stats.throttled_by_operation,
        stats.forwarded,
        stats.sdk_retries,
        stats.throttled_last_attempts,
        stats.upstream_failures
    );
    eprintln!("fleet: step retries (function-level): {}", record.retries);
    for step in STEPS {
        let (count, total) = record.durations.get(step).copied().unwrap_or_default();
        eprintln!(
            "fleet: {step}: {count} invocations, mean {:.0?}, errors {:?}",
            total / count.max(1) as u32,
            record.errors.get(step).cloned().unwrap_or_default()
        );
    }
    for (error_type, message) in &record.examples {
        eprintln!("fleet: e.g. {error_type}: {message}");
    }
    for failure in &record.failures {
        eprintln!("fleet: FAILED {failure}");
    }

    // The proxy did throttle, and the SDK retried: every throttled request but an SDK's last
    // attempt was followed by another attempt.
    assert!(stats.throttled > 0, "the proxy throttled nothing: {stats:?}");
    assert!(
        stats.sdk_retries >= stats.throttled - stats.throttled_last_attempts,
        "the SDK did not retry every throttled attempt: {stats:?}"
    );
    assert_eq!(stats.upstream_failures, 0, "{stats:?}");
    let permanent: Vec<_> =
        record.errors.values().flat_map(|e| e.keys()).filter(|t| !t.starts_with("Retryable.")).collect();
    assert!(permanent.is_empty(), "permanent errors: {permanent:?}; failures: {:#?}", record.failures);
    assert!(record.failures.is_empty(), "{} rotations failed: {:#?}", record.failures.len(), record.failures);

    // Every rotation completed, and no user is locked out.
    let tail = Instant::now();
    let mut problems = Vec::new();
    let handles = std::mem::take(&mut *checking.lock().unwrap());
    assert_eq!(handles.len(), SECRETS, "every rotation completed");
    for handle in handles {
        problems.extend(handle.await.expect("a check panicked"));
    }
    eprintln!(
        "fleet: the last checks (AWSCURRENT, new password in, old out) ended {:.2?} after the fleet",
        tail.elapsed()
    );
    assert!(problems.is_empty(), "{} of {SECRETS} rotations incomplete: {problems:#?}", problems.len());
    drop(processes);
}
