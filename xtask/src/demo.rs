//! `cargo xtask demo`: one real rotation, end to end, shown step by step.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use e2e::{STEPS, create_secret, invoke_step, secret_value, stages, start_rotation};
use serde_json::json;

use crate::services::Services;

const FUNCTION: &str = "postgres-rotation";
const ROLE: &str = "demo_app";

pub async fn run() -> Result<ExitCode> {
    let services = Services::start()?;
    let env = &services.env;
    let client = env.secrets_client();

    let initial_password = format!("Initial-{}", uuid::Uuid::new_v4().simple());
    env.create_role(ROLE, &initial_password).await;
    let value = json!({
        "engine": "postgres",
        "host": "localhost",
        "port": env.pg_port,
        "username": ROLE,
        "password": initial_password,
        "dbname": "postgres",
        "ssl": true,
    });
    let secret = create_secret(&client, "demo/postgres/demo_app", &value).await;
    println!();
    println!("PostgreSQL role {ROLE} on localhost:{} (TLS verify-full, scram-sha-256)", env.pg_port);
    println!("secret {secret}");
    show_stages("before", &stages(&client, &secret).await);

    let token = start_rotation(env, &client, &secret).await;
    println!("\nRotateSecret: version {token} staged AWSPENDING, no value yet");
    println!("invoking {FUNCTION} through the Lambda runtime API (cargo lambda watch):");
    for step in STEPS {
        let started = Instant::now();
        let result = invoke_step(env, FUNCTION, step, &secret, &token).await;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(()) => println!("  {step:<13} ok      {elapsed:>8.1} ms"),
            Err(e) => {
                println!("  {step:<13} FAILED  {elapsed:>8.1} ms  {}: {}", e.error_type, e.message);
                bail!("the rotation failed; logs are in {}", services.dir.display());
            }
        }
    }
    println!("  (the first step's time includes starting the function process)");
    show_stages("after", &stages(&client, &secret).await);

    let new_password =
        secret_value(&client, &secret, None, "AWSCURRENT").await["password"].as_str().unwrap_or_default().to_owned();
    let new_works = env.pg_logs_in(ROLE, &new_password).await;
    let old_works = env.pg_logs_in(ROLE, &initial_password).await;
    println!();
    println!("new password {}: {}", masked(&new_password), if new_works { "logs in" } else { "REJECTED" });
    println!("old password {}: {}", masked(&initial_password), if old_works { "STILL LOGS IN" } else { "rejected" });
    let verifier_sent = env.pg_log_text().contains(&format!("ALTER ROLE \"{ROLE}\" PASSWORD 'SCRAM-SHA-256$"));
    let plain_text_logged = env.pg_log_text().contains(&new_password);
    println!(
        "server log: the password was set as a SCRAM-SHA-256 verifier: {}; the plain text appears in it: {}",
        yes_no(verifier_sent),
        yes_no(plain_text_logged)
    );
    if !new_works || old_works || !verifier_sent || plain_text_logged {
        bail!("the rotation did not have the expected effect");
    }
    println!("\nstopping the services");
    drop(services);
    Ok(ExitCode::SUCCESS)
}

fn show_stages(when: &str, stages: &BTreeMap<String, Vec<String>>) {
    println!("versions {when}:");
    for (version, labels) in stages {
        println!("  {version}  {}", if labels.is_empty() { "(no label)".to_owned() } else { labels.join(", ") });
    }
}

fn masked(password: &str) -> String {
    format!("•••• ({} characters)", password.chars().count())
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}
