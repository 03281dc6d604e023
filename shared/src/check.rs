//! The preflight check: a read-only run of what a rotation will need, answered as a report.
//!
//! A function answers `{"Action": "check", "SecretId": "..."}` with a [`Report`]; the `rotation`
//! command runs the same checks locally. A check changes nothing anywhere, and no secret value,
//! token or key appears in a report.

use serde::{Deserialize, Serialize};

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// Not run: it does not apply, or an earlier failure makes it meaningless; `detail` says which.
    Skipped,
}

/// One check: what was checked, how it ended, and, for a failure, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// A stable name a script can match, e.g. `secret.readable`, `target.tls`.
    pub name: String,
    pub status: Status,
    /// What was found, for people.
    pub detail: String,
    /// For a failure: what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check run for one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub secret: String,
    /// The kind of rotation: "PostgreSQL", "API key"…
    pub engine: String,
    /// No check failed.
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(secret: &str, engine: &str) -> Self {
        Report { secret: crate::error::shown(secret), engine: engine.to_owned(), passed: true, checks: Vec::new() }
    }

    pub fn passed(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Status::Passed, detail.into(), None);
    }

    pub fn failed(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Status::Failed, detail.into(), Some(fix.into()));
    }

    pub fn skipped(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Status::Skipped, detail.into(), None);
    }

    fn push(&mut self, name: &str, status: Status, detail: String, fix: Option<String>) {
        self.passed &= status != Status::Failed;
        self.checks.push(Check { name: name.to_owned(), status, detail, fix });
    }

    /// The check named `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}
