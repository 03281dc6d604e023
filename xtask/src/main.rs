//! `cargo xtask <command>`: the developer commands of this repository.
//!
//! - `demo [postgres | mysql] [--release]`: installs what is missing, starts LocalStack and the databases,
//!   rotates a real password through the Lambda binary and shows what happened.
//! - `test`: starts the services, runs every test (unit and end to end), stops the services.
//! - `services`: starts the services and waits, printing the variables the tests read.
//! - `bench`: measures the release binary's start-up time and memory.
//! - `rds-bundle`: refreshes the Amazon RDS certificate bundle (`shared/certs/`) from npm.

mod bench;
mod certs;
mod demo;
mod rds_bundle;
mod services;
mod tools;

use std::process::{Command, ExitCode};

use anyhow::Result;

use services::Services;
use tools::progress;

const USAGE: &str = "usage: cargo xtask <demo [postgres | mysql] [--release] | test [-- <cargo test arguments>] | services | bench | rds-bundle>";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => {
            let release = args.iter().any(|a| a == "--release");
            let engine = args.iter().skip(1).find(|a| *a != "--release").map(String::as_str);
            match demo::Engine::parse(engine) {
                Some(engine) => demo::run(engine, release).await,
                None => {
                    eprintln!("usage: cargo xtask demo [postgres | mysql] [--release]");
                    return ExitCode::from(2);
                }
            }
        }
        Some("test") => test(&args[1..]),
        Some("services") => services(),
        Some("bench") => bench::run(),
        Some("rds-bundle") => rds_bundle::run(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(extra: &[String]) -> Result<ExitCode> {
    let services = Services::start(false)?;
    progress("running cargo test --workspace");
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["test", "--workspace"])
        .args(extra.iter().skip_while(|a| *a == "--"))
        .current_dir(services::workspace_root());
    command.envs(services.env.to_vars());
    let status = command.status()?;
    let dir = services.dir.clone();
    drop(services);
    if !status.success() {
        // The logs of a failed run are kept for a look.
        progress(&format!("tests failed; the services' logs are in {}", dir.display()));
        return Ok(ExitCode::FAILURE);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(ExitCode::SUCCESS)
}

fn services() -> Result<ExitCode> {
    let services = Services::start(false)?;
    for (name, value) in services.env.to_vars() {
        println!("export {name}={value}");
    }
    progress("services are up; press Enter to stop them");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(ExitCode::SUCCESS)
}
