//! The `rotation` command end to end: the real binary, run as a process with no stdin, against
//! LocalStack's Secrets Manager and the test PostgreSQL server (`cargo xtask test`).

use e2e::scenarios::{Db, Fixture};
use e2e::{TestEnv, invoke_step};
use serde_json::{Value, json};

/// What a user sees of one run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}): {}\nstderr: {}", self.stdout, self.stderr)
        })
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    fn assert_hides(&self, values: &[&str]) {
        for value in values {
            assert!(!self.stdout.contains(value) && !self.stderr.contains(value), "the output holds a secret value");
        }
    }
}

async fn rotation(env: &TestEnv, args: &[&str]) -> Run {
    rotation_with(env, args, &[]).await
}

async fn rotation_with(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rotation"))
        .args(args)
        .envs(vars.iter().copied())
        .env("AWS_ENDPOINT_URL", &env.aws_endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("CA_BUNDLE_PATH", &env.ca_path)
        .env("CONNECT_TIMEOUT_SECONDS", "3")
        .env("STATEMENT_TIMEOUT_SECONDS", "2")
        .env("NO_COLOR", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("ROTATION_STRATEGY")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run the rotation binary");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!("$ rotation {}\n{}{}[exit {}]", args.join(" "), run.stdout, run.stderr, run.code);
    run
}

fn labels(stages: &std::collections::BTreeMap<String, Vec<String>>, version: &str) -> Vec<String> {
    stages.get(version).cloned().unwrap_or_default()
}

#[test]
fn every_command_has_help_and_a_usage_error_exits_2() {
    for command in [&[][..], &["status"], &["check"], &["plan"], &["rotate"], &["resume"], &["cancel"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rotation"))
            .args(command)
            .arg("--help")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{command:?} --help");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: rotation") && text.contains("Exit codes:"), "{command:?}: {text}");
        assert!(text.contains("3  refused because of the rotation state"), "{text}");
    }
    for bad in [&["frobnicate"][..], &["status"], &["rotate", "s", "--engine", "oracle"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rotation"))
            .args(bad)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
    }
}

#[tokio::test]
async fn status_of_a_fresh_a_rotated_and_an_in_progress_secret() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let env = &f.env;
    let first = f.current_version().await.unwrap();

    let fresh = rotation(env, &["status", &f.secret, "--json"]).await;
    let doc = fresh.assert_code(0).json();
    assert_eq!(doc["arn"], f.secret.as_str());
    assert_eq!(doc["rotation"]["enabled"], false);
    assert_eq!(
        doc["versions"],
        json!([{"id": first, "stages": ["AWSCURRENT"], "created": doc["versions"][0]["created"]}])
    );
    assert!(doc["versions"][0]["created"].is_string(), "{doc}");
    assert_eq!(doc["in_progress"], Value::Null);
    let text = rotation(env, &["status", &f.secret]).await;
    text.assert_code(0);
    assert!(text.stdout.contains("not enabled") && text.stdout.contains("no rotation in progress"), "{}", text.stdout);
    text.assert_hides(&[&f.password]);

    let token = f.rotate_once().await;
    let doc = rotation(env, &["status", &f.secret, "--json"]).await.assert_code(0).json();
    assert_eq!(doc["rotation"]["enabled"], true);
    assert_eq!(doc["rotation"]["function"], env.lambda_arn.as_str());
    assert_eq!(doc["rotation"]["rules"]["automatically_after_days"], 30);
    let stages: Vec<(String, Value)> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v["stages"].clone()))
        .collect();
    assert_eq!(stages[0], (token.clone(), json!(["AWSCURRENT"])), "{doc}");
    assert_eq!(stages[1], (first.clone(), json!(["AWSPREVIOUS"])), "{doc}");
    assert_eq!(doc["in_progress"], Value::Null);

    let pending = f.start_rotation().await;
    let doc = rotation(env, &["status", &f.secret, "--json"]).await.assert_code(0).json();
    assert_eq!(doc["in_progress"]["version"], pending.as_str(), "{doc}");
    assert!(doc["in_progress"]["advice"].as_str().unwrap().contains("rotation resume"));
    let text = rotation(env, &["status", &f.secret]).await;
    text.assert_code(0);
    assert!(text.stdout.contains(&format!("version {pending} is staged AWSPENDING")), "{}", text.stdout);
    assert!(text.stdout.contains("rotation resume") && text.stdout.contains("rotation cancel"), "{}", text.stdout);
}

#[tokio::test]
async fn rotate_runs_the_four_steps_and_the_new_password_logs_in() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let old_version = f.current_version().await.unwrap();
    // No --engine: the secret's `engine` field says postgres.
    let run = rotation(&f.env, &["rotate", &f.secret, "--json"]).await;
    let doc = run.assert_code(0).json();
    let steps: Vec<_> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(steps, [("createSecret", true), ("setSecret", true), ("testSecret", true), ("finishSecret", true)]);
    let token = doc["version"].as_str().unwrap().to_owned();
    let stages = f.stages().await;
    assert_eq!(labels(&stages, &token), ["AWSCURRENT"], "{stages:?}");
    assert_eq!(labels(&stages, &old_version), ["AWSPREVIOUS"], "{stages:?}");
    assert_eq!(doc["before"], json!({ &old_version: ["AWSCURRENT"] }));
    assert_eq!(doc["after"][&token], json!(["AWSCURRENT"]));
    let new_password = f.password_of(None, "AWSCURRENT").await;
    assert!(f.env.pg_logs_in(&f.user, &new_password).await, "the new password logs in");
    assert!(!f.env.pg_logs_in(&f.user, &f.password).await, "the old password is refused");
    run.assert_hides(&[&new_password, &f.password]);

    // For people: one line per step.
    let run = rotation(&f.env, &["rotate", &f.secret, "--engine", "postgres"]).await;
    run.assert_code(0);
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        assert!(
            run.stdout.lines().any(|l| l.contains(step) && l.contains(" ok ") && l.ends_with(" ms")),
            "{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("before:") && run.stdout.contains("after:"));
    let newest = f.password_of(None, "AWSCURRENT").await;
    assert!(f.env.pg_logs_in(&f.user, &newest).await);
    assert!(!f.env.pg_logs_in(&f.user, &new_password).await);
}

#[tokio::test]
async fn rotate_refuses_while_a_rotation_is_in_progress() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let token = f.start_rotation().await;
    let before = f.stages().await;
    let run = rotation(&f.env, &["rotate", &f.secret]).await;
    run.assert_code(3);
    assert!(run.stderr.contains(&format!("version {token} is staged AWSPENDING")), "{}", run.stderr);
    assert!(run.stderr.contains("rotation resume") && run.stderr.contains("rotation cancel"), "{}", run.stderr);
    f.assert_unchanged(&before).await;
    let doc = rotation(&f.env, &["rotate", &f.secret, "--json"]).await.assert_code(3).json();
    assert_eq!(doc["exit_code"], 3);
    assert_eq!(doc["in_progress"]["version"], token.as_str());

    // --resume continues that rotation, with its token.
    let doc = rotation(&f.env, &["rotate", &f.secret, "--resume", "--json"]).await.assert_code(0).json();
    assert_eq!(doc["version"], token.as_str());
    assert_eq!(doc["resumed"], true);
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
    assert!(!f.logs_in(&f.password).await);
}

#[tokio::test]
async fn resume_finishes_a_rotation_interrupted_after_create_secret() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let nothing = rotation(&f.env, &["resume", &f.secret]).await;
    nothing.assert_code(3);
    assert!(nothing.stderr.contains("no rotation of secret"), "{}", nothing.stderr);

    let token = f.start_rotation().await;
    invoke_step(&f.env, "postgres-rotation", "createSecret", &f.secret, &token).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    let run = rotation(&f.env, &["resume", &f.secret]).await;
    run.assert_code(0);
    assert!(run.stdout.contains("its value is stored"), "{}", run.stdout);
    assert!(
        !run.stdout.lines().any(|l| l.trim_start().starts_with("createSecret")),
        "createSecret is not run again: {}",
        run.stdout
    );
    assert!(run.stdout.contains("set the pending password"), "what setSecret did: {}", run.stdout);
    run.assert_hides(&[&pending, &f.password]);
    let stages = f.stages().await;
    assert_eq!(labels(&stages, &token), ["AWSCURRENT"], "{stages:?}");
    assert!(f.logs_in(&pending).await);
    assert!(!f.logs_in(&f.password).await);
}

#[tokio::test]
async fn resume_finishes_a_rotation_interrupted_after_set_secret() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let token = f.start_rotation().await;
    invoke_step(&f.env, "postgres-rotation", "createSecret", &f.secret, &token).await.unwrap();
    invoke_step(&f.env, "postgres-rotation", "setSecret", &f.secret, &token).await.unwrap();
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    let doc = rotation(&f.env, &["resume", &f.secret, "--json"]).await.assert_code(0).json();
    assert_eq!(doc["version"], token.as_str());
    assert_eq!(doc["found"]["value_stored"], true);
    let steps: Vec<_> = doc["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["setSecret", "testSecret", "finishSecret"]);
    let notes = doc["steps"][0]["notes"].to_string();
    assert!(notes.contains("the pending password logs in already"), "setSecret found it done: {notes}");
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(f.logs_in(&pending).await);
    assert!(!f.logs_in(&f.password).await);
}

#[tokio::test]
async fn cancel_removes_the_label_of_a_rotation_interrupted_after_create_secret() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    rotation(&f.env, &["cancel", &f.secret]).await.assert_code(3);
    let current = f.current_version().await.unwrap();
    let token = f.start_rotation().await;
    invoke_step(&f.env, "postgres-rotation", "createSecret", &f.secret, &token).await.unwrap();
    let run = rotation(&f.env, &["cancel", &f.secret]).await;
    run.assert_code(0);
    assert!(run.stdout.contains(&format!("AWSPENDING removed from version {token}")), "{}", run.stdout);
    let stages = f.stages().await;
    assert!(!labels(&stages, &token).contains(&"AWSPENDING".to_owned()), "{stages:?}");
    assert_eq!(labels(&stages, &current), ["AWSCURRENT"], "{stages:?}");
    assert!(f.logs_in(&f.password).await, "the password is unchanged");
    // Nothing blocks the next rotation.
    rotation(&f.env, &["rotate", &f.secret]).await.assert_code(0);
}

#[tokio::test]
async fn cancel_is_refused_when_the_current_password_no_longer_logs_in() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let token = f.start_rotation().await;
    invoke_step(&f.env, "postgres-rotation", "createSecret", &f.secret, &token).await.unwrap();
    f.env.set_role_password(&f.user, "changed-behind-the-back").await;
    let run = rotation(&f.env, &["cancel", &f.secret]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("refused to cancel") && run.stderr.contains("rotation resume"), "{}", run.stderr);
    assert!(
        run.stderr.contains("credential.current: the AWSCURRENT password"),
        "names the failed login: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("rotation.pending:"), "the rotation being cancelled is no reason: {}", run.stderr);
    run.assert_hides(&[&f.password, "changed-behind-the-back"]);
    let stages = f.stages().await;
    assert!(labels(&stages, &token).contains(&"AWSPENDING".to_owned()), "the label stays: {stages:?}");
    let doc = rotation(&f.env, &["cancel", &f.secret, "--json"]).await.assert_code(1).json();
    assert_eq!(doc["cancelled"], false);
    assert_eq!(doc["preflight"]["passed"], false);
}

#[tokio::test]
async fn plan_describes_the_steps_and_changes_nothing() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let before = f.stages().await;
    let run = rotation(&f.env, &["plan", &f.secret]).await;
    run.assert_code(0);
    assert!(run.stdout.contains("single-user"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("ALTER ROLE \"{}\" PASSWORD '<SCRAM-SHA-256 verifier>'", f.user)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("•••• ({} characters)", f.password.chars().count())), "{}", run.stdout);
    run.assert_hides(&[&f.password]);
    let doc = rotation(&f.env, &["plan", &f.secret, "--json"]).await.assert_code(0).json();
    assert_eq!(doc["strategy"]["name"], "single-user");
    let steps: Vec<_> = doc["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["createSecret", "setSecret", "testSecret", "finishSecret"]);
    f.assert_unchanged(&before).await;
}

#[tokio::test]
async fn check_passes_locally_and_fails_with_a_wrong_current_password() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let run = rotation(&f.env, &["check", &f.secret, "--engine", "postgres"]).await;
    run.assert_code(0);
    let doc = rotation(&f.env, &["check", &f.secret, "--json"]).await.assert_code(0).json();
    assert_eq!(doc["passed"], true, "{doc}");
    assert!(doc["checks"].as_array().unwrap().iter().any(|c| c["name"] == "secret.describe"), "{doc}");

    f.env.set_role_password(&f.user, "not-what-the-secret-says").await;
    let run = rotation(&f.env, &["check", &f.secret]).await;
    run.assert_code(1);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    run.assert_hides(&[&f.password, "not-what-the-secret-says"]);
    let doc = rotation(&f.env, &["check", &f.secret, "--json"]).await.assert_code(1).json();
    assert_eq!(doc["passed"], false, "{doc}");
}

#[tokio::test]
async fn check_via_the_function_prints_the_report_it_answers() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    // `cargo lambda watch` serves Lambda's Invoke API for the functions it runs.
    let lambda = [("AWS_ENDPOINT_URL_LAMBDA", f.env.lambda_url.as_str())];
    let args = ["check", &f.secret, "--via-function", "postgres-rotation", "--json"];
    let doc = rotation_with(&f.env, &args, &lambda).await.assert_code(0).json();
    assert_eq!(doc["passed"], true, "{doc}");
    assert_eq!(doc["engine"], "PostgreSQL");
    let passed = |doc: &Value, name: &str| {
        doc["checks"].as_array().unwrap().iter().any(|c| c["name"] == name && c["status"] == "passed")
    };
    assert!(passed(&doc, "credential.current"), "{doc}");

    f.env.set_role_password(&f.user, "not-what-the-secret-says").await;
    let run = rotation_with(&f.env, &args[..4], &lambda).await;
    run.assert_code(1);
    assert!(run.stdout.contains("credential.current") && run.stdout.contains("FAILED"), "{}", run.stdout);
    run.assert_hides(&[&f.password, "not-what-the-secret-says"]);
}
