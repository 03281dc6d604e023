//! The release binary of a function, run as Lambda runs it: a process that serves the runtime
//! API at `AWS_LAMBDA_RUNTIME_API`, with the environment the end-to-end tests give it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use super::report::percentile;
use super::runtime_api::{Completion, RuntimeApi};

/// Spawns per init measurement.
pub const INIT_RUNS: usize = 10;
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a function process needs besides its runtime API.
pub struct FunctionSetup {
    pub name: &'static str,
    pub binary: PathBuf,
    /// Secrets Manager's endpoint as the function sees it (the counting proxy).
    pub aws_endpoint: String,
    pub ca_path: String,
    /// What this function needs besides (the API-key function's profiles).
    pub extra_env: Vec<(&'static str, String)>,
}

impl FunctionSetup {
    /// The environment of `start_functions` in `services.rs` (logs at INFO here), plus what
    /// Lambda itself sets.
    fn environment(&self, runtime_api: &RuntimeApi) -> Vec<(&'static str, String)> {
        let mut environment = vec![
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.address.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", self.name.to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO".into()),
            ("AWS_ENDPOINT_URL", self.aws_endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("CA_BUNDLE_PATH", self.ca_path.clone()),
            ("CONNECT_TIMEOUT_SECONDS", "3".into()),
        ];
        environment.extend(self.extra_env.iter().cloned());
        environment
    }

    fn spawn(&self, runtime_api: &RuntimeApi, log: Option<&Path>) -> Result<Child> {
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        Command::new(&self.binary)
            .env_clear()
            .envs(self.environment(runtime_api))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))
    }

    /// Lambda's init duration: from spawning the process to its first request for work, the
    /// median of `INIT_RUNS` fresh processes.
    pub async fn init_time(&self) -> Result<Duration> {
        let mut times = Vec::with_capacity(INIT_RUNS);
        for _ in 0..INIT_RUNS {
            let api = RuntimeApi::start(self.name).await?;
            let spawned = Instant::now();
            let mut child = self.spawn(&api, None)?;
            let asked = api.first_request(INIT_TIMEOUT).await;
            child.kill().await?;
            times.push(asked? - spawned);
        }
        times.sort();
        Ok(percentile(&times, 50.0))
    }

    /// A long-lived process, ready for its first event.
    pub async fn start(&self, log: &Path) -> Result<FunctionProcess> {
        let api = RuntimeApi::start(self.name).await?;
        let child = self.spawn(&api, Some(log))?;
        api.first_request(INIT_TIMEOUT)
            .await
            .with_context(|| format!("{} did not start; see {}", self.name, log.display()))?;
        let pid = child.id().context("the function exited at once")?;
        Ok(FunctionProcess { api, child, pid })
    }
}

pub struct FunctionProcess {
    api: RuntimeApi,
    child: Child,
    pid: u32,
}

impl FunctionProcess {
    /// Hands one event to the process and waits for its answer (or for its end).
    pub async fn invoke(&mut self, event: serde_json::Value) -> Result<Completion> {
        tokio::select! {
            completion = self.api.invoke(event) => completion,
            status = self.child.wait() => bail!("the function process exited ({})", status?),
        }
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start at field 3 (`state`);
        // utime and stime are fields 14 and 15, in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')').context("/proc/<pid>/stat")?.1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf only reads a system constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
    }

    /// Peak resident memory (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/<pid>/status")?;
        Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
    }

    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
