//! `cargo xtask demo`: one real rotation, end to end, shown step by step.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use e2e::{STEPS, create_secret, invoke_step, secret_value, stages, start_rotation};
use serde_json::json;

use crate::services::Services;

const ROLE: &str = "demo_app";

/// The database the demo rotates a password on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
    /// The Redshift function, on the PostgreSQL server standing in for Redshift (md5 passwords).
    Redshift,
    /// The API-key function, rotating an OpenBao token that OpenBao issues.
    ApiKey,
}

impl Engine {
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("postgres") | Some("postgresql") => Some(Engine::Postgres),
            Some("mysql") | Some("mariadb") => Some(Engine::Mysql),
            Some("redshift") => Some(Engine::Redshift),
            Some("api-key") => Some(Engine::ApiKey),
            Some(_) => None,
        }
    }

    fn function(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres-rotation",
            Engine::Mysql => "mysql-rotation",
            Engine::Redshift => "redshift-rotation",
            Engine::ApiKey => "api-key-rotation",
        }
    }
}

pub async fn run(engine: Engine, release: bool) -> Result<ExitCode> {
    let services = Services::start(release)?;
    if engine == Engine::ApiKey {
        return run_api_key(services).await;
    }
    let env = &services.env;
    let client = env.secrets_client();
    let function = engine.function();

    let initial_password = format!("Initial-{}", uuid::Uuid::new_v4().simple());
    let (engine_name, port) = match engine {
        Engine::Postgres => {
            env.create_role(ROLE, &initial_password).await;
            println!("\nPostgreSQL role {ROLE} on localhost:{} (TLS verify-full, scram-sha-256)", env.pg_port);
            ("postgres", env.pg_port)
        }
        Engine::Mysql => {
            env.mysql_create_user(ROLE, "%", &initial_password).await;
            println!("\nMariaDB account '{ROLE}'@'%' on localhost:{} (TLS verify-full)", env.mysql_port);
            ("mariadb", env.mysql_port)
        }
        Engine::ApiKey => unreachable!("the API-key demo has its own run"),
        Engine::Redshift => {
            env.create_redshift_user(ROLE, &initial_password, "").await;
            println!(
                "\nuser {ROLE} on localhost:{}, database dev: PostgreSQL standing in for Redshift (TLS verify-full, \
                 md5 password, as Redshift stores it)",
                env.pg_port
            );
            ("redshift", env.pg_port)
        }
    };
    let value = json!({
        "engine": engine_name,
        "host": "localhost",
        "port": port,
        "username": ROLE,
        "password": initial_password,
        "ssl": true,
    });
    let secret = create_secret(&client, &format!("demo/{engine_name}/{ROLE}"), &value).await;
    println!("secret {secret}");
    show_stages("before", &stages(&client, &secret).await);

    let token = start_rotation(env, &client, &secret).await;
    println!("\nRotateSecret: version {token} staged AWSPENDING, no value yet");
    println!("invoking {function} through the Lambda runtime API (cargo lambda watch):");
    run_steps(&services, function, &secret, &token).await?;
    println!("  (the first step's time includes starting the function process)");
    show_stages("after", &stages(&client, &secret).await);

    let new_password =
        secret_value(&client, &secret, None, "AWSCURRENT").await["password"].as_str().unwrap_or_default().to_owned();
    let (new_works, old_works, server_log, hash_form) = match engine {
        Engine::Postgres => (
            env.pg_logs_in(ROLE, &new_password).await,
            env.pg_logs_in(ROLE, &initial_password).await,
            env.pg_log_text(),
            format!("ALTER ROLE \"{ROLE}\" PASSWORD 'SCRAM-SHA-256$"),
        ),
        Engine::Mysql => (
            env.mysql_logs_in(ROLE, &new_password).await,
            env.mysql_logs_in(ROLE, &initial_password).await,
            env.mysql_log_text(),
            "SET PASSWORD = '*".to_owned(),
        ),
        Engine::ApiKey => unreachable!("the API-key demo has its own run"),
        Engine::Redshift => (
            env.pg_logs_in(ROLE, &new_password).await,
            env.pg_logs_in(ROLE, &initial_password).await,
            env.pg_log_text(),
            format!("ALTER USER \"{ROLE}\" PASSWORD 'md5"),
        ),
    };
    println!();
    println!("new password {}: {}", masked(&new_password), if new_works { "logs in" } else { "REJECTED" });
    println!("old password {}: {}", masked(&initial_password), if old_works { "STILL LOGS IN" } else { "rejected" });
    let verifier_sent = server_log.contains(&hash_form);
    let plain_text_logged = server_log.contains(&new_password);
    println!(
        "server log: the password was set as a hash ({hash_form}…): {}; the plain text appears in it: {}",
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

/// Two rotations of an OpenBao token through the `openbao-token` profile (mode `issued`): OpenBao
/// issues each new key, and the key that falls off AWSPREVIOUS is revoked.
async fn run_api_key(services: Services) -> Result<ExitCode> {
    let env = &services.env;
    let client = env.secrets_client();
    let function = Engine::ApiKey.function();
    let root = env.openbao_root_token.clone();
    let body = json!({"policies": ["default"], "no_parent": true, "display_name": "demo-first-key"});
    let (status, created) = env.openbao_request("POST", "auth/token/create", Some(&root), Some(&body));
    if status != 200 {
        bail!("OpenBao did not issue the first token: {status}");
    }
    let first_key = created["auth"]["client_token"].as_str().unwrap_or_default().to_owned();
    let first_id = created["auth"]["accessor"].as_str().unwrap_or_default().to_owned();
    println!("\nOpenBao on {} (HTTPS, verified); a first token, accessor {first_id}", env.openbao_url);
    let value =
        json!({"api_key": first_key, "api_key_id": first_id, "rotation": {"profile": "openbao-token"}, "team": "demo"});
    let secret = create_secret(&client, &format!("demo/api-key/{}", uuid::Uuid::new_v4().simple()), &value).await;
    println!("secret {secret}, profile openbao-token (mode issued) from {}", env.api_key_profiles_path);
    show_stages("before", &stages(&client, &secret).await);

    let mut keys = vec![first_key];
    for round in 1..=2 {
        let token = start_rotation(env, &client, &secret).await;
        println!("\nrotation {round}: RotateSecret staged version {token} AWSPENDING; invoking {function}:");
        run_steps(&services, function, &secret, &token).await?;
        let current = secret_value(&client, &secret, None, "AWSCURRENT").await;
        keys.push(current["api_key"].as_str().unwrap_or_default().to_owned());
        println!("  new key {}, id {}", masked(keys.last().unwrap()), current["api_key_id"].as_str().unwrap_or("none"));
        show_stages("after", &stages(&client, &secret).await);
    }
    println!();
    let mut as_expected = true;
    for (key, (which, expected)) in keys.iter().zip([
        ("first key (fell off AWSPREVIOUS)", false),
        ("AWSPREVIOUS key", true),
        ("AWSCURRENT key", true),
    ]) {
        let valid = env.openbao_token_valid(key);
        as_expected &= valid == expected;
        println!("{which:<34} {}: {}", masked(key), if valid { "valid at OpenBao" } else { "revoked (403)" });
    }
    if !as_expected {
        bail!("the rotation did not have the expected effect");
    }
    println!("\nstopping the services");
    drop(services);
    Ok(ExitCode::SUCCESS)
}

/// Invokes the four steps, one line each with its duration; stops at the first failure.
async fn run_steps(services: &Services, function: &str, secret: &str, token: &str) -> Result<()> {
    for step in STEPS {
        let started = Instant::now();
        let result = invoke_step(&services.env, function, step, secret, token).await;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(()) => println!("  {step:<13} ok      {elapsed:>8.1} ms"),
            Err(e) => {
                println!("  {step:<13} FAILED  {elapsed:>8.1} ms  {}: {}", e.error_type, e.message);
                bail!("the rotation failed; logs are in {}", services.dir.display());
            }
        }
    }
    Ok(())
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
