//! `cargo xtask bench`: how long a function takes to start (Lambda's "init duration") and
//! how much memory it holds then, measured on the release binary.
//!
//! Start-up is measured from spawning the binary to its first request for work on the Lambda
//! runtime API, served here by a minimal listener. The function reads its settings and builds
//! the Secrets Manager client in that time, as on Lambda; no network call is made before the
//! first event.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::services::workspace_root;
use crate::tools::{self, progress};

const RUNS: usize = 30;

pub fn run() -> Result<ExitCode> {
    progress("building postgres-rotation with the release profile (several minutes the first time)");
    tools::run(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "-p", "postgres-rotation"])
            .current_dir(workspace_root()),
        "cargo build --release",
    )?;
    let binary = workspace_root().join("target/release/postgres-rotation");
    let size = std::fs::metadata(&binary)?.len();

    let mut starts = Vec::with_capacity(RUNS);
    let mut memory = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (start, rss_kib) = measure_start(&binary)?;
        starts.push(start);
        memory.push(rss_kib);
    }
    starts.sort();
    memory.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("postgres-rotation (release, {} bytes, host {})", size, std::env::consts::ARCH);
    println!(
        "start to first runtime API request over {RUNS} runs: median {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms(starts[RUNS / 2]),
        ms(starts[0]),
        ms(starts[RUNS - 1])
    );
    println!("resident memory at that point: median {} KiB", memory[RUNS / 2]);
    Ok(ExitCode::SUCCESS)
}

fn measure_start(binary: &std::path::Path) -> Result<(Duration, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "postgres-rotation")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the release binary")?;
    let (stream, _) = listener.accept()?;
    let mut request_line = String::new();
    BufReader::new(&stream).read_line(&mut request_line)?;
    let elapsed = started.elapsed();
    let rss_kib = resident_kib(child.id()).unwrap_or(0);
    child.kill()?;
    child.wait()?;
    if !request_line.contains("/runtime/invocation/next") {
        bail!("the function's first request was {request_line:?}, not a request for work");
    }
    Ok((elapsed, rss_kib))
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
