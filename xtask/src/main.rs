//! `cargo xtask <command>`: the developer commands of this repository.
//!
//! - `demo [postgres | mysql | redshift | api-key] [--release]`: installs what is missing, starts LocalStack and the databases,
//!   rotates a real password through the Lambda binary and shows what happened.
//! - `test`: starts the services, runs every test (unit and end to end), stops the services.
//! - `services`: starts the services and waits, printing the variables the tests read.
//! - `bench [--check] [--secrets N] [--json PATH]`: rotates N secrets per engine through the release
//!   binaries and compares every step with its floor (bare Secrets Manager calls and TLS logins).
//! - `rds-bundle`: refreshes the Amazon RDS certificate bundle (`shared/certs/`) from npm.

mod api_key_profiles;
mod bench;
mod certs;
mod demo;
mod rds_bundle;
mod services;
mod tools;

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Result;

use services::Services;
use tools::progress;

const USAGE: &str = "usage: cargo xtask <demo [postgres | mysql | redshift | api-key] [--release] | test [-- <cargo test arguments>] | services | bench [--check] [--secrets N] [--json PATH] | rds-bundle>";

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
                    eprintln!("usage: cargo xtask demo [postgres | mysql | redshift | api-key] [--release]");
                    return ExitCode::from(2);
                }
            }
        }
        Some("test") => test(&args[1..]),
        Some("services") => services(),
        Some("bench") => bench::run(&args[1..]).await,
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
    let majors = tools::extra_postgres_majors()?;
    let services = Services::start_with(false, &majors)?;
    let extra: Vec<&str> = extra.iter().map(String::as_str).skip_while(|a| *a == "--").collect();
    let mut runs = Vec::new();

    progress(&format!("running cargo test --workspace (PostgreSQL {})", services.env.pg_version));
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO"));
    command.args(["test", "--workspace"]).args(&extra).current_dir(services::workspace_root());
    command.envs(services.env.to_vars());
    let status = command.status()?;
    runs.push((format!("cargo test --workspace (PostgreSQL {})", services.env.pg_version), status, started.elapsed()));

    // The PostgreSQL end-to-end tests again on each other major (ROTATION_TEST_PG_VERSIONS).
    for cluster in &services.extra_postgres {
        let Some(args) = postgres_suite_args(&extra) else {
            progress(&format!("PostgreSQL {}: the arguments select no PostgreSQL test file; skipped", cluster.major));
            continue;
        };
        let line = "=".repeat(78);
        let short = cluster.version.split(" on ").next().unwrap_or(&cluster.version);
        let what = format!("{short}: cargo test {}", args.join(" "));
        progress(&line);
        progress(&format!("{what} (127.0.0.1:{})", cluster.port));
        progress(&line);
        let started = Instant::now();
        let status = Command::new(env!("CARGO"))
            // Both files run even when the first fails: what differs between majors is the point.
            .args(["test", "--no-fail-fast"])
            .args(&args)
            .current_dir(services::workspace_root())
            .envs(services.env_for(cluster).to_vars())
            .status()?;
        runs.push((what, status, started.elapsed()));
    }

    let dir = services.dir.clone();
    drop(services);
    for (what, status, took) in &runs {
        let verdict = if status.success() { "ok" } else { "FAILED" };
        progress(&format!("{verdict:<6} {what} ({:.0} s)", took.as_secs_f64()));
    }
    if runs.iter().any(|(_, status, _)| !status.success()) {
        // The logs of a failed run are kept for a look.
        progress(&format!("tests failed; the services' logs are in {}", dir.display()));
        return Ok(ExitCode::FAILURE);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(ExitCode::SUCCESS)
}

/// The `cargo test` arguments of a run of the PostgreSQL end-to-end test files on another
/// major: both files, or those of them that the developer's own `--test` arguments name (none:
/// `None`), followed by the developer's test-binary arguments (after their `--`).
fn postgres_suite_args(extra: &[&str]) -> Option<Vec<String>> {
    const FILES: [&str; 2] = ["postgres", "postgres_alternating"];
    let split = extra.iter().position(|a| *a == "--").unwrap_or(extra.len());
    let (cargo_args, test_args) = extra.split_at(split);
    let mut named = Vec::new();
    let mut args = cargo_args.iter();
    while let Some(arg) = args.next() {
        if *arg == "--test" {
            named.extend(args.next().copied());
        } else if let Some(name) = arg.strip_prefix("--test=") {
            named.push(name);
        }
    }
    let files: Vec<&str> = FILES.into_iter().filter(|f| named.is_empty() || named.contains(f)).collect();
    if files.is_empty() {
        return None;
    }
    let mut result = vec!["-p".to_owned(), "e2e".to_owned()];
    for file in files {
        result.extend(["--test".to_owned(), file.to_owned()]);
    }
    result.extend(test_args.iter().map(|a| (*a).to_owned()));
    Some(result)
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

#[cfg(test)]
mod tests {
    use super::postgres_suite_args;

    #[test]
    fn other_majors_run_the_postgres_files_the_arguments_select() {
        let all = ["-p", "e2e", "--test", "postgres", "--test", "postgres_alternating"].map(String::from).to_vec();
        assert_eq!(postgres_suite_args(&[]), Some(all.clone()));
        assert_eq!(postgres_suite_args(&["-p", "rotation"]), Some(all));
        assert_eq!(
            postgres_suite_args(&["-p", "e2e", "--test", "postgres", "--", "lock", "--nocapture"]),
            Some(["-p", "e2e", "--test", "postgres", "--", "lock", "--nocapture"].map(String::from).to_vec())
        );
        assert_eq!(
            postgres_suite_args(&["--test=postgres_alternating"]),
            Some(["-p", "e2e", "--test", "postgres_alternating"].map(String::from).to_vec())
        );
        assert_eq!(postgres_suite_args(&["-p", "e2e", "--test", "mysql"]), None);
    }
}
