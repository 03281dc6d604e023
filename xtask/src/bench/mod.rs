//! `cargo xtask bench [--check] [--secrets N] [--json PATH]`: the real job, measured.
//!
//! Per engine (PostgreSQL, MariaDB, Redshift's stand-in, then the API-key function rotating
//! OpenBao tokens), the release binary rotates N secrets end to end against the local services,
//! and the same run measures the floor each step is held to:
//!
//! ```text
//!   bench ── events ──> runtime API ──────> function process (release binary, one per engine)
//!                       (runtime_api.rs)     (function.rs)       │                    │
//!                                                   counting proxy (proxy.rs)   counting proxy
//!                                                   x-amz-target headers        connections = logins
//!                                                        │                      (or HTTP calls)
//!                                                   LocalStack               PostgreSQL / MariaDB
//!                                                                            / OpenBao (HTTPS)
//! ```
//!
//! 1. Build the release binaries and start the services (`Services::start`).
//! 2. Create N users and secrets whose host is the database proxy (`rotation.rs`); for the
//!    API-key function, each secret and its OpenBao tokens just before its rotation
//!    (`api_key.rs`).
//! 3. Init time: spawn to first request for work, over fresh processes (`function.rs`).
//! 4. Rotate each secret through one long-lived process, timing and counting every step; before
//!    each invocation, sample the floor (`floor.rs`): a bare Secrets Manager call and a bare TLS
//!    login (API key: a bare HTTPS call) through the same proxies.
//! 5. Report (`report.rs`): a table, a JSON document, and with `--check` the verdict.
//!
//! A step's floor is `Secrets Manager calls × call floor + logins × login floor`, both counted
//! in the step itself. For the API-key function the "logins" are its HTTP calls to OpenBao (its
//! client opens one connection per call, counted by a proxy in front of OpenBao), and the login
//! floor is one fresh verified TLS connection (rustls, the test CA, `TCP_NODELAY`) carrying one
//! `GET /v1/auth/token/lookup-self` and its answer. So createSecret's floor is its Secrets
//! Manager calls (6: the secret's versions and value, the admin secret, the pending checks,
//! `PutSecretValue`) plus its `list`, one `lookup` per token in the server (3, see `api_key.rs`)
//! and its `issue`; setSecret's is its reads alone (nothing is pushed); testSecret's its reads
//! plus one `test` call; finishSecret's its reads, the revocation of the `AWSPREVIOUS` token
//! and the stage move. Every OpenBao call is priced as a `lookup-self`, which is the cheapest of them
//! (issue and revoke write to OpenBao's storage): the floor is a lower bound.
//!
//! `--check` fails a step whose median is over its engine's limit × its floor:
//! `report::CHECK_MAX_RATIO` for the databases, `report::API_KEY_MAX_RATIO` for the API-key
//! function.
//!
//! The floor has to be measured by optimized code, as the functions are built, and `cargo xtask`
//! is not (unoptimized, a SCRAM login's 4096 PBKDF2 rounds alone take ~100 ms). So the bench
//! first runs itself again from an optimized build of xtask (`OPTIMIZED`, in `target/xtask-bench/`).

mod api_key;
mod floor;
mod function;
mod proxy;
mod report;
mod rotation;
mod runtime_api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e::scenarios::Engine;
use e2e::{STEPS, TestEnv};

use crate::services::{Services, workspace_root};
use crate::tools::{self, progress};
use floor::{Floor, Login};
use function::FunctionSetup;
use proxy::CountingProxy;
use report::{API_KEY_MAX_RATIO, CHECK_MAX_RATIO, EngineResult, StepResult};

pub const USAGE: &str = "usage: cargo xtask bench [--check] [--secrets N] [--json PATH]";
const DEFAULT_SECRETS: usize = 20;

/// Cargo arguments for an optimized xtask: the release profile without its size tuning (no LTO,
/// quicker to build), with unwinding so the services are stopped even after a panic.
const OPTIMIZED: &[&str] = &[
    "--profile=xtask-bench",
    "--config=profile.xtask-bench.inherits='release'",
    "--config=profile.xtask-bench.opt-level=3",
    "--config=profile.xtask-bench.lto=false",
    "--config=profile.xtask-bench.codegen-units=16",
    "--config=profile.xtask-bench.panic='unwind'",
    "--config=profile.xtask-bench.strip=false",
];

struct Options {
    /// Fail when a step's median is over its engine's limit × its floor.
    check: bool,
    secrets: usize,
    json: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options { check: false, secrets: DEFAULT_SECRETS, json: target_dir().join("bench.json") };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--check" => options.check = true,
                "--secrets" => {
                    options.secrets = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--secrets needs a number greater than 0")?;
                }
                "--json" => options.json = args.next().ok_or("--json needs a path")?.into(),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(options)
    }
}

pub async fn run(args: &[String]) -> Result<ExitCode> {
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("{problem}\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    if cfg!(debug_assertions) {
        return run_optimized(args);
    }
    // mysql_async builds its TLS configuration with the process's default crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    progress("building the release binaries (several minutes the first time)");
    tools::run(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "-p", "postgres-rotation", "-p", "mysql-rotation"])
            .args(["-p", "redshift-rotation", "-p", api_key::FUNCTION])
            .current_dir(workspace_root()),
        "cargo build --release",
    )?;
    let services = Services::start(true)?;
    let started = Instant::now();
    let measured = measure(&options, &services).await;
    let took = started.elapsed();
    let dir = services.dir.clone();
    drop(services);
    let engines = match measured {
        Ok(engines) => engines,
        Err(error) => {
            progress(&format!("the bench failed; the services' and functions' logs are in {}", dir.display()));
            return Err(error);
        }
    };
    let _ = std::fs::remove_dir_all(dir);
    report(&options, &engines, took)
}

/// Runs `cargo xtask bench <args>` again from the optimized build.
fn run_optimized(args: &[String]) -> Result<ExitCode> {
    progress("building the bench itself optimized (several minutes the first time)");
    let status = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--package=xtask"])
        .args(OPTIMIZED)
        .args(["--", "bench"])
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("cargo run")?;
    Ok(ExitCode::from(status.code().map_or(1, |code| code as u8)))
}

/// Prints the tables, writes the JSON document, and with `--check` gives the verdict.
fn report(options: &Options, engines: &[EngineResult], took: Duration) -> Result<ExitCode> {
    let date = String::from_utf8(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output()?.stdout)?;
    let date = date.trim();
    let failures: Vec<String> = engines.iter().flat_map(EngineResult::check_failures).collect();
    println!("\n{date}, measured in {:.0} s", took.as_secs_f64());
    for engine in engines {
        engine.print();
    }
    let document = report::document(date, engines, &failures);
    std::fs::write(&options.json, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("write {}", options.json.display()))?;
    println!("\nwritten to {}", options.json.display());

    if !options.check {
        return Ok(ExitCode::SUCCESS);
    }
    if failures.is_empty() {
        println!(
            "check passed: every step's median is within its engine's limit × its floor \
             ({CHECK_MAX_RATIO}× for the databases, {API_KEY_MAX_RATIO}× for the API-key function)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("\ncheck failed: step medians over their engine's limit × their floor:");
    for failure in &failures {
        println!("  {failure}");
    }
    Ok(ExitCode::FAILURE)
}

/// The engines, one after the other, then the API-key function, with one Secrets Manager proxy
/// for all.
async fn measure(options: &Options, services: &Services) -> Result<Vec<EngineResult>> {
    let localstack: SocketAddr =
        services.env.aws_endpoint.trim_start_matches("http://").parse().context("LocalStack's address")?;
    let secrets_manager = CountingProxy::start(localstack).await?;
    let mut engines = Vec::new();
    for db in [Engine::Postgres, Engine::Mysql, Engine::Redshift] {
        engines.push(bench_engine(db, options, services, &secrets_manager).await?);
    }
    engines.push(api_key::bench(options.secrets, services, &secrets_manager).await?);
    Ok(engines)
}

async fn bench_engine(
    db: Engine,
    options: &Options,
    services: &Services,
    secrets_manager: &CountingProxy,
) -> Result<EngineResult> {
    let env = &services.env;
    let title = match db {
        Engine::Postgres => "PostgreSQL",
        Engine::Mysql => "MariaDB",
        Engine::Redshift => "Redshift (PostgreSQL stand-in, md5)",
    };
    let database = CountingProxy::start(([127, 0, 0, 1], db.port(env)).into()).await?;
    // Set-up and checks talk to LocalStack directly; the function and the floor go through the proxy.
    let client = env.secrets_client();
    let proxied_endpoint = format!("http://127.0.0.1:{}", secrets_manager.port);
    let proxied_client = TestEnv { aws_endpoint: proxied_endpoint.clone(), ..env.clone() }.secrets_client();

    progress(&format!("{title}: creating {} users and their secrets", options.secrets));
    let secrets = rotation::create_secrets(db, env, &client, database.port, options.secrets).await?;

    let login = Login::database(db, env, database.port).await?;
    let mut floor = Floor::new(login, proxied_client, &secrets[0].arn).await?;

    let binary = target_dir().join("release").join(db.function());
    let setup = FunctionSetup {
        name: db.function(),
        binary: binary.clone(),
        aws_endpoint: proxied_endpoint,
        ca_path: env.ca_path.clone(),
        extra_env: Vec::new(),
    };
    progress(&format!("{title}: init time over {} spawns", function::INIT_RUNS));
    let init = setup.init_time().await?;

    progress(&format!(
        "{title}: rotating {} secrets through one {} process, sampling the floor between invocations",
        secrets.len(),
        db.function()
    ));
    let log = services.dir.join(format!("bench-{}.log", db.function()));
    let mut process = setup.start(&log).await?;
    let cpu_before = process.cpu_time()?;
    let proxies = rotation::Proxies { secrets_manager, database: &database };
    let samples = rotation::rotate_all(db, env, &client, &mut process, proxies, &mut floor, &secrets)
        .await
        .with_context(|| format!("the function's log is {}", log.display()))?;
    let cpu_per_rotation = (process.cpu_time()? - cpu_before) / secrets.len() as u32;
    let peak_rss_kib = process.peak_rss_kib()?;
    process.stop().await?;
    let (call_floor, login_floor) = (floor.call_median(), floor.login_median());

    Ok(EngineResult {
        title,
        function: db.function(),
        secrets: secrets.len(),
        binary_bytes: std::fs::metadata(&binary)?.len(),
        init,
        peak_rss_kib,
        cpu_per_rotation,
        call_floor,
        login_floor,
        floor_samples: floor.samples(),
        login_label: "logins",
        max_ratio: CHECK_MAX_RATIO,
        steps: STEPS
            .iter()
            .zip(&samples)
            .map(|(step, samples)| StepResult::new(step, samples, call_floor, login_floor))
            .collect(),
    })
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` in the workspace).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}
