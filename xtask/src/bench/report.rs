//! What the bench found: per engine and step the median and p90 time, the counted calls and
//! logins, the floor and the ratio to it; per function init time, peak memory, CPU per
//! rotation and binary size. Printed as a table and written as one JSON document.

use std::time::Duration;

use serde_json::{Value, json};

use super::rotation::StepSample;

/// `--check` fails a step whose median takes more than this many times its floor. A 40 ms
/// Nagle/delayed-ACK stall on a ~5 ms login is about 10×; loopback noise stays far below 2×.
pub const CHECK_MAX_RATIO: f64 = 2.0;

/// `--check`'s limit for the API-key function's steps (see `api_key.rs`). Every HTTP call is
/// priced as the floor's `lookup-self`, though OpenBao's token create and revocation write to its
/// storage; measured 1.0× to 1.2× (2-core x86_64), so the databases' limit holds here too, and
/// catches what it is for: a stall of tens of ms on a ~2.5 ms call, or calls made one too many.
pub const API_KEY_MAX_RATIO: f64 = 2.0;

/// The value at percentile `p` (nearest rank) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub struct StepResult {
    pub step: &'static str,
    pub median: Duration,
    pub p90: Duration,
    /// The first rotation's time: the process's first event of that step (cold TLS set-up).
    pub first: Duration,
    /// Secrets Manager calls (the median count; `calls_range` when they varied).
    pub calls: usize,
    pub calls_range: (usize, usize),
    /// The operations of the last rotation's step, in order.
    pub operations: Vec<String>,
    pub logins: usize,
    pub logins_range: (usize, usize),
    pub floor: Duration,
}

impl StepResult {
    pub fn new(step: &'static str, samples: &[StepSample], call_floor: Duration, login_floor: Duration) -> Self {
        let mut times: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
        times.sort();
        let (calls, calls_range) = median_count(samples.iter().map(|s| s.operations.len()));
        let (logins, logins_range) = median_count(samples.iter().map(|s| s.logins));
        StepResult {
            step,
            median: percentile(&times, 50.0),
            p90: percentile(&times, 90.0),
            first: samples[0].elapsed,
            calls,
            calls_range,
            operations: samples.last().map(|s| s.operations.clone()).unwrap_or_default(),
            logins,
            logins_range,
            floor: call_floor * calls as u32 + login_floor * logins as u32,
        }
    }

    /// Median over floor; `None` for a step that makes no call and no login.
    pub fn ratio(&self) -> Option<f64> {
        (!self.floor.is_zero()).then(|| self.median.as_secs_f64() / self.floor.as_secs_f64())
    }
}

fn median_count(counts: impl Iterator<Item = usize>) -> (usize, (usize, usize)) {
    let mut counts: Vec<usize> = counts.collect();
    counts.sort();
    (counts[(counts.len() - 1) / 2], (counts[0], counts[counts.len() - 1]))
}

pub struct EngineResult {
    pub title: &'static str,
    pub function: &'static str,
    pub secrets: usize,
    pub binary_bytes: u64,
    pub init: Duration,
    pub peak_rss_kib: u64,
    pub cpu_per_rotation: Duration,
    /// Median of a bare `DescribeSecret` through the same proxy.
    pub call_floor: Duration,
    /// Median of a bare verified TLS login (and close) to the same server through the same proxy.
    pub login_floor: Duration,
    /// How many of each the floors are the median of.
    pub floor_samples: usize,
    /// What the "logins" are: `"logins"` (database connections) or `"HTTP calls"`.
    pub login_label: &'static str,
    /// `--check`'s limit on median / floor for this engine's steps.
    pub max_ratio: f64,
    pub steps: Vec<StepResult>,
}

impl EngineResult {
    /// The steps whose median exceeds `max_ratio` × floor, described.
    pub fn check_failures(&self) -> Vec<String> {
        let max_ratio = self.max_ratio;
        self.steps
            .iter()
            .filter(|s| s.ratio().is_some_and(|r| r > max_ratio))
            .map(|s| {
                format!(
                    "{} {}: median {} is {:.1}× its floor {} (limit {max_ratio}×)",
                    self.function,
                    s.step,
                    ms(s.median),
                    s.ratio().unwrap_or_default(),
                    ms(s.floor)
                )
            })
            .collect()
    }

    pub fn print(&self) {
        println!(
            "\n{} ({}, {} secrets, one warm process; floor: Secrets Manager call {}, {} {}, medians of {}; \
             check {}×)",
            self.title,
            self.function,
            self.secrets,
            ms(self.call_floor),
            if self.login_label == "logins" { "TLS login" } else { "HTTPS call" },
            ms(self.login_floor),
            self.floor_samples,
            self.max_ratio
        );
        println!(
            "| {:<13} | {:>9} | {:>9} | {:>8} | {:>10} | {:>9} | {:>6} | {:>9} |",
            "step", "median", "p90", "SM calls", self.login_label, "floor", "ratio", "first"
        );
        println!(
            "|{:-<15}|{:->11}|{:->11}|{:->10}|{:->12}|{:->11}|{:->8}|{:->11}|",
            "", ":", ":", ":", ":", ":", ":", ":"
        );
        for s in &self.steps {
            let ratio = s.ratio().map_or("-".to_owned(), |r| format!("{r:.1}×"));
            println!(
                "| {:<13} | {:>9} | {:>9} | {:>8} | {:>10} | {:>9} | {:>6} | {:>9} |",
                s.step,
                ms(s.median),
                ms(s.p90),
                count(s.calls, s.calls_range),
                count(s.logins, s.logins_range),
                ms(s.floor),
                ratio,
                ms(s.first)
            );
        }
        let rotation: Duration = self.steps.iter().map(|s| s.median).sum();
        println!(
            "rotation (sum of medians) {}; init {} (median of {} spawns); peak RSS {:.1} MiB; \
             CPU {} per rotation; binary {:.1} MB stripped ({})",
            ms(rotation),
            ms(self.init),
            super::function::INIT_RUNS,
            self.peak_rss_kib as f64 / 1024.0,
            ms(self.cpu_per_rotation),
            self.binary_bytes as f64 / 1e6,
            std::env::consts::ARCH
        );
        for s in &self.steps {
            println!("  {:<13} calls: {}", s.step, s.operations.join(", "));
        }
    }

    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "step": s.step,
                    "median_ms": millis(s.median),
                    "p90_ms": millis(s.p90),
                    "first_ms": millis(s.first),
                    "secrets_manager_calls": s.calls,
                    "secrets_manager_calls_min_max": [s.calls_range.0, s.calls_range.1],
                    "secrets_manager_operations": s.operations,
                    "logins": s.logins,
                    "logins_min_max": [s.logins_range.0, s.logins_range.1],
                    "logins_are": self.login_label,
                    "floor_ms": millis(s.floor),
                    "ratio": s.ratio().map(round2),
                })
            })
            .collect();
        json!({
            "engine": self.title,
            "function": self.function,
            "secrets": self.secrets,
            "floor": {
                "secrets_manager_call_ms": millis(self.call_floor),
                "login_ms": millis(self.login_floor),
                "login_is": if self.login_label == "logins" { "TLS login" } else { "HTTPS call" },
                "samples": self.floor_samples,
            },
            "check_max_ratio": self.max_ratio,
            "steps": steps,
            "rotation_ms": millis(self.steps.iter().map(|s| s.median).sum()),
            "init_ms": millis(self.init),
            "init_runs": super::function::INIT_RUNS,
            "peak_rss_kib": self.peak_rss_kib,
            "cpu_ms_per_rotation": millis(self.cpu_per_rotation),
            "binary_bytes_stripped": self.binary_bytes,
        })
    }
}

/// The whole run as one JSON document.
pub fn document(date: &str, engines: &[EngineResult], failures: &[String]) -> Value {
    json!({
        "date": date,
        "command": "cargo xtask bench",
        "machine": {
            "arch": std::env::consts::ARCH,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpu_model(),
        },
        "check": { "max_ratio": CHECK_MAX_RATIO, "max_ratio_api_key": API_KEY_MAX_RATIO, "passed": failures.is_empty(), "failures": failures },
        "engines": engines.iter().map(EngineResult::to_json).collect::<Vec<_>>(),
    })
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

fn count(median: usize, (min, max): (usize, usize)) -> String {
    if min == max { median.to_string() } else { format!("{median} ({min}-{max})") }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, calls: usize, logins: usize) -> StepSample {
        StepSample { elapsed: Duration::from_millis(ms), operations: vec!["DescribeSecret".into(); calls], logins }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&values, 90.0), Duration::from_millis(18));
        assert_eq!(percentile(&values[..1], 90.0), Duration::from_millis(1));
    }

    #[test]
    fn the_floor_is_calls_times_call_plus_logins_times_login_and_the_check_uses_it() {
        let samples = [sample(30, 2, 1), sample(20, 2, 1), sample(25, 2, 1)];
        let step = StepResult::new("setSecret", &samples, Duration::from_millis(2), Duration::from_millis(5));
        assert_eq!(step.floor, Duration::from_millis(9));
        assert_eq!(step.median, Duration::from_millis(25));
        let ratio = step.ratio().unwrap();
        assert!((ratio - 25.0 / 9.0).abs() < 1e-9);
        let engine = EngineResult {
            title: "PostgreSQL",
            function: "postgres-rotation",
            secrets: 3,
            binary_bytes: 0,
            init: Duration::ZERO,
            peak_rss_kib: 0,
            cpu_per_rotation: Duration::ZERO,
            call_floor: Duration::from_millis(2),
            login_floor: Duration::from_millis(5),
            floor_samples: 50,
            login_label: "logins",
            max_ratio: CHECK_MAX_RATIO,
            steps: vec![step],
        };
        assert_eq!(engine.check_failures().len(), 1, "2.8× is over the {CHECK_MAX_RATIO}× limit");
    }
}
