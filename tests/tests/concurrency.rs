//! Concurrent invocations converge (issue 11): Secrets Manager may run the same step of the same
//! rotation in several function instances at once (a retry while the first attempt is still
//! running). Each step here runs in three processes of the real binary at the same moment, each
//! with a runtime API of its own ([`e2e::runtime_api`]); every invocation must succeed or fail
//! retryably, a retry of a step that failed must succeed, and the rotation must end complete.

use std::collections::BTreeMap;

use e2e::runtime_api::{FunctionProcess, Outcome};
use e2e::scenarios::{Db, Fixture};
use e2e::*;
use serde_json::json;

const PROCESSES: usize = 3;
/// Rotations per scenario: each a new chance for the invocations to interleave differently.
const ROUNDS: usize = 5;

/// Per step: errorType -> count, and in how many rounds the three invocations were all in
/// flight at one moment.
#[derive(Default)]
struct Counts {
    errors: BTreeMap<&'static str, BTreeMap<String, usize>>,
    overlapped: BTreeMap<&'static str, usize>,
}

async fn start_processes(env: &TestEnv, name: &str) -> Vec<FunctionProcess> {
    let mut processes = Vec::new();
    for _ in 0..PROCESSES {
        processes.push(FunctionProcess::start(env, name).await);
    }
    processes
}

/// Runs `step` in every process at the same moment, then checks the outcomes; retries once in
/// one process when any failed retryably.
async fn step_everywhere(
    f: &Fixture,
    processes: &[FunctionProcess],
    step: &'static str,
    token: &str,
    counts: &mut Counts,
) {
    let secret = f.secret.as_str();
    let (a, b, c) = tokio::join!(
        processes[0].step_timed(step, secret, token),
        processes[1].step_timed(step, secret, token),
        processes[2].step_timed(step, secret, token),
    );
    let all_in_flight = [&a, &b, &c].iter().map(|t| t.served).max() < [&a, &b, &c].iter().map(|t| t.answered).min();
    *counts.overlapped.entry(step).or_default() += usize::from(all_in_flight);
    let outcomes: [Outcome; PROCESSES] = [a.outcome, b.outcome, c.outcome];
    let mut retryable = 0;
    for outcome in &outcomes {
        if let Err((error_type, message)) = outcome {
            assert!(
                error_type.starts_with("Retryable."),
                "{step} of {} failed with {error_type}: {message}",
                processes[0].name
            );
            eprintln!("{} {step}: {error_type}: {message}", processes[0].name);
            *counts.errors.entry(step).or_default().entry(error_type.clone()).or_default() += 1;
            retryable += 1;
        }
    }
    counts.errors.entry(step).or_default();
    if retryable > 0 {
        processes[0]
            .step(step, secret, token)
            .await
            .unwrap_or_else(|e| panic!("{step} retried alone after {retryable} retryable failures: {e:?}"));
    }
    let stages = f.stages().await;
    let pending = stages.values().filter(|labels| labels.iter().any(|l| l == "AWSPENDING")).count();
    assert!(pending <= 1, "after {step}, {pending} versions hold AWSPENDING: {stages:?}");
    if step == "finishSecret" {
        assert_eq!(pending, 0, "after finishSecret a version still holds AWSPENDING: {stages:?}");
        assert_eq!(stages[token], ["AWSCURRENT"], "{stages:?}");
    }
}

/// Starts a rotation and runs its steps, each in every process at once; returns the token.
async fn rotate_concurrently(f: &Fixture, processes: &[FunctionProcess], counts: &mut Counts) -> String {
    let token = f.start_rotation().await;
    for step in STEPS {
        step_everywhere(f, processes, step, &token, counts).await;
    }
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    token
}

fn report(scenario: &str, counts: &Counts) {
    for (step, errors) in &counts.errors {
        let total: usize = errors.values().sum();
        let overlapped = counts.overlapped.get(step).copied().unwrap_or(0);
        eprintln!(
            "{scenario}: {step}: {total} of {} invocations failed retryably {errors:?}; \
             all {PROCESSES} in flight at once in {overlapped} of {ROUNDS} rounds",
            PROCESSES * ROUNDS
        );
    }
}

async fn single_user(db: Db) {
    let f = Fixture::new(db, json!({})).await;
    let processes = start_processes(&f.env, db.function()).await;
    let mut counts = Counts::default();
    let mut old = f.password.clone();
    for _ in 0..ROUNDS {
        rotate_concurrently(&f, &processes, &mut counts).await;
        let (user, new) = f.current_credentials().await;
        assert_eq!(user, f.user);
        assert_ne!(new, old);
        assert!(f.logs_in(&new).await, "the new password logs in");
        assert!(!f.logs_in(&old).await, "the old password is refused");
        old = new;
    }
    report(&format!("{} single user", db.engine()), &counts);
}

#[tokio::test]
async fn postgres_single_user_converges() {
    single_user(Db::Postgres).await;
}

#[tokio::test]
async fn mariadb_single_user_converges() {
    single_user(Db::Mysql).await;
}

#[tokio::test]
async fn postgres_alternating_users_converge() {
    let env = TestEnv::from_env();
    let main = unique("alt");
    let (master_arn, master) = env.create_pg_master().await;
    let f = Fixture::with_master(Db::Postgres, &main, &master_arn, json!({})).await;
    env.let_pg_master_administer(&master, &main).await;
    let clone = format!("{main}_clone");
    let processes = start_processes(&f.env, Db::Postgres.function()).await;
    let mut counts = Counts::default();
    let mut previous = (f.user.clone(), f.password.clone());
    for round in 0..ROUNDS {
        rotate_concurrently(&f, &processes, &mut counts).await;
        let (user, password) = f.current_credentials().await;
        assert_eq!(&user, if round % 2 == 0 { &clone } else { &main }, "round {round}: the users alternate");
        assert!(f.env.pg_logs_in(&user, &password).await, "round {round}: the new credentials log in");
        assert!(f.env.pg_logs_in(&previous.0, &previous.1).await, "round {round}: the previous user still logs in");
        previous = (user, password);
    }
    report("postgres alternating users", &counts);
}
