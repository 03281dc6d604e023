//! The four rotation steps as Secrets Manager drives them, written once for every kind of
//! credential: the event, the guard before each step, `finishSecret`'s stage moves, verified
//! writes, logs and metrics. What a kind of credential adds (how a pending value is made, put in
//! effect and tested) is a [`Rotation`].

use std::future::Future;
use std::time::Instant;

use secrecy::SecretString;
use tracing::{Instrument, error, info, info_span};

use crate::check::{Report, Status};
use crate::event::Payload;
use crate::{Error, RotationEvent, SecretStore, SecretVersions, Step, stage};

/// What one kind of credential adds to the four steps. The engine has already checked that the
/// event's token is a version staged `AWSPENDING` (and not `AWSCURRENT`) when a method runs.
///
/// Secrets Manager may invoke a step again after any failure, or while an earlier invocation of
/// it still runs: every method must be safe to run again with the same token.
pub trait Rotation: Send + Sync + 'static {
    /// For logs and metrics: "PostgreSQL", "API key".
    const LABEL: &'static str;

    /// `createSecret`: store a value staged `AWSPENDING` for the token
    /// ([`StepContext::put_pending`]), unless one is stored already.
    fn create_secret<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// `setSecret`: put the pending value in effect on the target.
    fn set_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> impl Future<Output = Result<(), Error>> + Send;

    /// `testSecret`: prove the pending value works.
    fn test_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> impl Future<Output = Result<(), Error>> + Send;

    /// The preflight of what this kind adds (the secret parses for it, the target answers, the
    /// credentials work...), appended to `report`. Read-only: it changes nothing anywhere.
    fn check<S: SecretStore>(
        &self,
        secret: &CheckContext<'_, S>,
        report: &mut Report,
    ) -> impl Future<Output = ()> + Send {
        let _ = (secret, report);
        async {}
    }

    /// `finishSecret`, before `AWSCURRENT` moves to the token: the version staged `AWSPREVIOUS`
    /// now is about to lose that label (for example, revoke its key).
    fn before_finish<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = step;
        async { Ok(()) }
    }
}

/// What a step works with: the event, the secret's versions as the guard read them, and the
/// Secrets Manager calls every kind of rotation makes.
pub struct StepContext<'a, S> {
    pub store: &'a S,
    pub event: &'a RotationEvent,
    pub versions: &'a SecretVersions,
}

impl<S: SecretStore> StepContext<'_, S> {
    /// The value staged `label`; for `AWSPENDING`, the token's version.
    pub async fn value(&self, label: &str) -> Result<Option<SecretString>, Error> {
        let version = (label == stage::PENDING).then_some(self.event.token.as_str());
        self.store.get_value(&self.event.secret_id, version, label).await
    }

    /// As [`StepContext::value`], and an error naming the stage when there is none.
    pub async fn required_value(&self, label: &str) -> Result<SecretString, Error> {
        self.value(label).await?.ok_or_else(|| Error::MissingValue {
            secret: self.event.secret_id.clone(),
            stage: if label == stage::PENDING {
                format!("{label} for version {}", self.event.token)
            } else {
                label.to_owned()
            },
        })
    }

    /// The secret's ARN when Secrets Manager gave it, else the id the event names.
    pub fn secret_arn(&self) -> &str {
        self.versions.arn.as_deref().unwrap_or(&self.event.secret_id)
    }

    /// `PutSecretValue` of the pending version, verified: when the call fails (or its answer
    /// was lost) but the token's version holds a pending value, stored by this call or by another
    /// invocation of the same step, the step goes on with it.
    pub async fn put_pending(&self, pending: &SecretString) -> Result<(), Error> {
        let event = self.event;
        let stored =
            self.store.put_pending(&event.secret_id, &event.token, pending, event.rotation_token.as_ref()).await;
        let Err(error) = stored else {
            return Ok(());
        };
        match self.value(stage::PENDING).await {
            Ok(Some(_)) => {
                info!(error = %error, "PutSecretValue reported a failure, but the pending value is stored: going on");
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// A stage move, verified: when it failed (or its answer was lost), reads the stages back;
    /// if the token's version holds `label` (`attached`) or not (`!attached`) as the move meant,
    /// this call or another invocation made it, and the step goes on.
    async fn verify_stage_move(&self, result: Result<(), Error>, label: &str, attached: bool) -> Result<(), Error> {
        let Err(error) = result else {
            return Ok(());
        };
        match self.store.describe(&self.event.secret_id).await {
            Ok(versions) if versions.has_stage(&self.event.token, label) == attached => {
                info!(
                    error = %error,
                    label,
                    attached,
                    "UpdateSecretVersionStage reported a failure, but the stage is where it should be: going on"
                );
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// The error for a pending version that can no longer succeed, with the way out: remove its
    /// `AWSPENDING` label. `why` says what is known about the target.
    pub fn stale_pending(&self, error: Error, why: &str) -> Error {
        Error::StalePending {
            inner: Box::new(error),
            secret: crate::error::shown(&self.event.secret_id),
            token: crate::error::shown(&self.event.token),
            why: why.to_owned(),
        }
    }
}

/// What a preflight check works with: the secret's id and versions, and the store.
pub struct CheckContext<'a, S> {
    pub store: &'a S,
    pub secret_id: &'a str,
    pub versions: &'a SecretVersions,
}

/// Runs the four steps of one kind of rotation against Secrets Manager (or a double).
pub struct Rotator<S, R> {
    store: S,
    rotation: R,
}

/// Who runs a step, which decides how the guard reads the secret's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invoker {
    /// Secrets Manager (or a test playing it): rotation must be enabled, and `RotateSecret` has
    /// already staged the token's version `AWSPENDING`.
    SecretsManager,
    /// An operator running the steps locally (the `rotation` command): the secret may have no
    /// rotation configured, and `createSecret` may name a token no version has yet, which its
    /// `PutSecretValue` then creates, provided no other version is staged `AWSPENDING`.
    Operator,
}

/// What the guard found before a step.
enum Guard {
    /// The token is already `AWSCURRENT`: the rotation is complete.
    AlreadyCurrent(SecretVersions),
    /// The token is `AWSPENDING`: the step has work to do.
    Pending(SecretVersions),
}

impl<S: SecretStore, R: Rotation> Rotator<S, R> {
    pub fn new(store: S, rotation: R) -> Self {
        Rotator { store, rotation }
    }

    /// Answers an event: a rotation step (answered `null`) or an operator's
    /// `{"Action": "check", "SecretId": "..."}` (answered with the [`Report`]), with one log span
    /// around it.
    pub async fn handle(&self, event: impl Into<Payload>) -> Result<serde_json::Value, Error> {
        let event = match event.into() {
            Payload::Json(event) => event,
            Payload::Unreadable => {
                let e = Error::InvalidEvent(
                    "the payload cannot be read as JSON (it is not JSON, or it is nested more than 128 levels deep)"
                        .into(),
                );
                error!(error = %e, error_type = %e.error_type(), "rejected the rotation event");
                return Err(e);
            }
        };
        match crate::event::check_request(&event) {
            None => self.handle_step(event).await.map(|()| serde_json::Value::Null),
            Some(Err(e)) => {
                error!(error = %e, error_type = %e.error_type(), "rejected the check event");
                Err(e)
            }
            Some(Ok(secret_id)) => Ok(self.handle_check(&secret_id).await),
        }
    }

    /// The preflight check, as the function answers it: one log line with the counts, no value.
    async fn handle_check(&self, secret_id: &str) -> serde_json::Value {
        let started = Instant::now();
        let span = info_span!("preflight_check", secret_id = %crate::error::shown(secret_id), engine = R::LABEL);
        async {
            let report = match crate::deadline::remaining() {
                Some(left) => match tokio::time::timeout(left, self.check(secret_id)).await {
                    Ok(report) => report,
                    Err(_) => {
                        let mut report = Report::new(secret_id, R::LABEL);
                        report.failed(
                            "check.deadline",
                            "the check did not finish before the invocation's deadline: a login, statement or \
                             call was still waiting",
                            "raise the function's timeout or lower CONNECT_TIMEOUT_SECONDS / \
                             STATEMENT_TIMEOUT_SECONDS / REQUEST_TIMEOUT_SECONDS",
                        );
                        report
                    }
                },
                None => self.check(secret_id).await,
            };
            let count = |status| report.checks.iter().filter(|c| c.status == status).count();
            let failed_checks: Vec<&str> =
                report.checks.iter().filter(|c| c.status == Status::Failed).map(|c| c.name.as_str()).collect();
            info!(
                duration_ms = started.elapsed().as_millis() as u64,
                outcome = if report.passed { "passed" } else { "failed" },
                passed = count(Status::Passed),
                failed = count(Status::Failed),
                skipped = count(Status::Skipped),
                failed_checks = %failed_checks.join(","),
                "check finished"
            );
            serde_json::to_value(&report).expect("a report serializes")
        }
        .instrument(span)
        .await
    }

    /// Runs the step an event asks for, with one log span around it.
    async fn handle_step(&self, event: serde_json::Value) -> Result<(), Error> {
        let started = Instant::now();
        let event = match RotationEvent::from_json(event) {
            Ok(event) => event,
            Err(e) => {
                error!(error = %e, error_type = %e.error_type(), "rejected the rotation event");
                return Err(e);
            }
        };
        let span = info_span!(
            "rotation_step",
            secret_id = %event.secret_id,
            token = %event.token,
            step = %event.step,
            engine = R::LABEL,
        );
        async {
            let result = match crate::deadline::remaining() {
                // The last word before Lambda's own "Task timed out", which names nothing.
                Some(left) => tokio::time::timeout(left, self.run_step(&event))
                    .await
                    .unwrap_or_else(|_| Err(Error::OutOfTime { step: event.step.to_string() })),
                None => self.run_step(&event).await,
            };
            let duration_ms = started.elapsed().as_millis() as u64;
            crate::metrics::emit(&crate::metrics::StepRecord {
                step: &event.step.to_string(),
                secret_id: &event.secret_id,
                engine: R::LABEL,
                duration_ms,
                error_type: result.as_ref().err().map(Error::error_type),
            });
            match &result {
                Ok(()) => info!(duration_ms, outcome = "success", "step finished"),
                Err(e) => error!(
                    duration_ms,
                    outcome = "failure",
                    error_type = %e.error_type(),
                    error = %e,
                    "step failed"
                ),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// The preflight check of `secret_id`: what the engine needs of Secrets Manager, then what
    /// the kind of rotation needs ([`Rotation::check`]). Changes nothing.
    pub async fn check(&self, secret_id: &str) -> Report {
        let mut report = Report::new(secret_id, R::LABEL);
        let shown_id = crate::error::shown(secret_id);
        let versions = match self.store.describe(secret_id).await {
            Ok(versions) => {
                report.passed("secret.describe", format!("DescribeSecret answers for {shown_id}"));
                versions
            }
            Err(error) => {
                report.failed(
                    "secret.describe",
                    format!("DescribeSecret failed: {error}"),
                    secrets_manager_fix(&error, "DescribeSecret", &shown_id)
                        .unwrap_or_else(|| "check that the secret exists and that the role may call secretsmanager:DescribeSecret on it".into()),
                );
                return report;
            }
        };
        let arn = crate::error::shown(versions.arn.as_deref().unwrap_or(secret_id));
        check_rotation_state(&versions, &arn, &mut report);
        check_pending(&versions, &arn, &mut report);
        let readable = match self.store.get_value(secret_id, None, stage::CURRENT).await {
            Ok(Some(_)) => {
                report.passed("secret.readable", "GetSecretValue of AWSCURRENT answers a value");
                true
            }
            Ok(None) => {
                report.failed(
                    "secret.readable",
                    "the secret has no AWSCURRENT value",
                    format!("store the credentials: aws secretsmanager put-secret-value --secret-id {arn} --secret-string file://secret.json"),
                );
                false
            }
            Err(error) => {
                let fix = secrets_manager_fix(&error, "GetSecretValue", &arn).unwrap_or_else(|| {
                    "run the check again; if it keeps failing, check the function's network path to Secrets Manager \
                     (VPC endpoint or NAT)"
                        .into()
                });
                report.failed("secret.readable", format!("GetSecretValue of AWSCURRENT failed: {error}"), fix);
                false
            }
        };
        report.skipped(
            "secret.writable",
            "PutSecretValue and UpdateSecretVersionStage have no dry run, so the check cannot prove the role \
             may call them without changing the secret: the role needs secretsmanager:PutSecretValue and \
             secretsmanager:UpdateSecretVersionStage on it (and GetRandomPassword for database secrets)",
        );
        if !readable {
            report.skipped(
                "credential",
                format!("the {} checks need the AWSCURRENT value, which cannot be read", R::LABEL),
            );
            return report;
        }
        let secret = CheckContext { store: &self.store, secret_id, versions: &versions };
        self.rotation.check(&secret, &mut report).await;
        report
    }

    /// The guard, then the step, as Secrets Manager invokes it.
    pub async fn run_step(&self, event: &RotationEvent) -> Result<(), Error> {
        self.run_step_as(event, Invoker::SecretsManager).await
    }

    /// The guard, then the step, for `invoker`.
    pub async fn run_step_as(&self, event: &RotationEvent, invoker: Invoker) -> Result<(), Error> {
        match self.guard(event, invoker).await? {
            Guard::AlreadyCurrent(versions) => {
                if event.step == Step::Finish {
                    let step = StepContext { store: &self.store, event, versions: &versions };
                    remove_leftover_pending(&step).await?;
                }
                info!("the token is already AWSCURRENT: nothing to do");
                Ok(())
            }
            Guard::Pending(versions) => {
                let step = StepContext { store: &self.store, event, versions: &versions };
                match event.step {
                    Step::Create => self.rotation.create_secret(&step).await,
                    Step::Set => self.rotation.set_secret(&step).await,
                    Step::Test => self.rotation.test_secret(&step).await,
                    Step::Finish => {
                        self.rotation.before_finish(&step).await?;
                        finish_secret(&step).await
                    }
                }
            }
        }
    }

    /// The checks AWS's templates make before every step.
    async fn guard(&self, event: &RotationEvent, invoker: Invoker) -> Result<Guard, Error> {
        let versions = self.store.describe(&event.secret_id).await?;
        if invoker == Invoker::SecretsManager && !versions.rotation_enabled {
            return Err(Error::RotationDisabled { secret: event.secret_id.clone() });
        }
        let Some(labels) = versions.stages.get(&event.token) else {
            if invoker == Invoker::Operator && event.step == Step::Create {
                if let Some(other) = versions.version_with(stage::PENDING) {
                    return Err(Error::NotPending {
                        secret: event.secret_id.clone(),
                        token: event.token.clone(),
                        stages: format!("none; version {other} is staged AWSPENDING: a rotation is in progress"),
                    });
                }
                return Ok(Guard::Pending(versions));
            }
            return Err(Error::UnknownVersion { secret: event.secret_id.clone(), token: event.token.clone() });
        };
        if versions.has_stage(&event.token, stage::CURRENT) {
            return Ok(Guard::AlreadyCurrent(versions));
        }
        if !versions.has_stage(&event.token, stage::PENDING) {
            let stages = if labels.is_empty() { "none".to_owned() } else { labels.join(", ") };
            return Err(Error::NotPending { secret: event.secret_id.clone(), token: event.token.clone(), stages });
        }
        Ok(Guard::Pending(versions))
    }
}

/// `rotation.enabled`: whether and when Secrets Manager rotates the secret, and with which function.
fn check_rotation_state(versions: &SecretVersions, arn: &str, report: &mut Report) {
    let schedule = versions.rotation_schedule.as_deref().unwrap_or("no schedule");
    let function = versions.rotation_lambda_arn.as_deref().map(crate::error::shown);
    let mut detail = format!("schedule: {schedule}; rotation function: {}", function.as_deref().unwrap_or("none"));
    if let Some(last) = &versions.last_rotated {
        detail.push_str(&format!("; last rotated {last}"));
    }
    if let Some(next) = &versions.next_rotation {
        detail.push_str(&format!("; next rotation {next}"));
    }
    if versions.rotation_enabled {
        report.passed("rotation.enabled", format!("rotation is enabled ({detail})"));
    } else {
        report.skipped(
            "rotation.enabled",
            format!(
                "rotation is not enabled ({detail}): Secrets Manager will not rotate the secret until \
                 `aws secretsmanager rotate-secret --secret-id {arn} --rotation-lambda-arn <this function> \
                 --rotation-rules ...` configures it; the checks below prove what a rotation would need"
            ),
        );
    }
    // The function that answers the check is the one named in the secret, or the scheduled
    // rotation runs elsewhere (another function, another network, another role).
    if let (Some(configured), Ok(name)) = (&versions.rotation_lambda_arn, std::env::var("AWS_LAMBDA_FUNCTION_NAME")) {
        if function_matches(configured, &name) {
            report.passed(
                "rotation.function",
                format!("the secret names this function ({})", crate::error::shown(&name)),
            );
        } else {
            report.failed(
                "rotation.function",
                format!(
                    "the secret is rotated by {}, not by this function ({}): this check proves nothing about that one",
                    crate::error::shown(configured),
                    crate::error::shown(&name)
                ),
                "invoke the check on the function the secret names, or point the secret at this one with \
                 `aws secretsmanager rotate-secret --rotation-lambda-arn`",
            );
        }
    }
}

/// Whether a rotation function ARN (or name) names the function `name`.
fn function_matches(configured: &str, name: &str) -> bool {
    let configured_name = match configured.split_once(":function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest),
        None => configured,
    };
    configured_name == name || configured == name
}

/// `rotation.pending`: a version staged `AWSPENDING` that is not `AWSCURRENT` is a rotation in
/// progress, or one that stopped and blocks the next.
fn check_pending(versions: &SecretVersions, arn: &str, report: &mut Report) {
    match versions.version_with(stage::PENDING) {
        None => report.passed("rotation.pending", "no version is staged AWSPENDING: no rotation is under way"),
        Some(version) if versions.has_stage(version, stage::CURRENT) => report.passed(
            "rotation.pending",
            "AWSPENDING is left on the AWSCURRENT version (a finished rotation): the next finishSecret removes it",
        ),
        Some(version) => {
            let version = crate::error::shown(version);
            report.failed(
                "rotation.pending",
                format!(
                    "version {version} is staged AWSPENDING and is not AWSCURRENT: a rotation is in progress, \
                     or it stopped and blocks the next one"
                ),
                format!(
                    "if no rotation is running, finish it (`rotation resume`) or abandon it (`rotation cancel`, or \
                     `aws secretsmanager update-secret-version-stage --secret-id {arn} --version-stage AWSPENDING \
                     --remove-from-version-id {version}`)"
                ),
            )
        }
    }
}

/// The fix for a refused Secrets Manager call: the permission it needs.
pub(crate) fn secrets_manager_fix(error: &Error, operation: &str, resource: &str) -> Option<String> {
    let Error::SecretsManager { detail, .. } = error else {
        return None;
    };
    if detail.contains("AccessDenied") {
        Some(format!(
            "the role may not call secretsmanager:{operation} on {resource}: allow it in the function's role \
             (and in the secret's resource policy, if it has one)"
        ))
    } else if detail.contains("KMS") || detail.contains("Decrypt") {
        Some(format!(
            "the role may not decrypt {resource} with its KMS key: allow kms:Decrypt on the key (and \
             kms:GenerateDataKey, for the rotation's writes)"
        ))
    } else if detail.contains("ResourceNotFound") {
        Some(format!("no secret {resource} exists in this account and region: check the id"))
    } else {
        None
    }
}

/// Makes the token `AWSCURRENT` and takes `AWSPENDING` off it.
async fn finish_secret<S: SecretStore>(step: &StepContext<'_, S>) -> Result<(), Error> {
    let event = step.event;
    let current_version = step.versions.version_with(stage::CURRENT).map(str::to_owned);
    if current_version.as_deref() != Some(event.token.as_str()) {
        let moved = step
            .store
            .move_stage(&event.secret_id, stage::CURRENT, Some(&event.token), current_version.as_deref())
            .await;
        step.verify_stage_move(moved, stage::CURRENT, true).await?;
        info!(previous_version = current_version.as_deref().unwrap_or("none"), "moved AWSCURRENT to the token");
    }
    let removed = step.store.move_stage(&event.secret_id, stage::PENDING, None, Some(&event.token)).await;
    step.verify_stage_move(removed, stage::PENDING, false).await
}

/// Secrets Manager removes `AWSPENDING` itself after a rotation, emulators do not, and a
/// label left on a finished version blocks the next rotation.
async fn remove_leftover_pending<S: SecretStore>(step: &StepContext<'_, S>) -> Result<(), Error> {
    let event = step.event;
    if step.versions.has_stage(&event.token, stage::PENDING) {
        let removed = step.store.move_stage(&event.secret_id, stage::PENDING, None, Some(&event.token)).await;
        step.verify_stage_move(removed, stage::PENDING, false).await?;
        info!("removed AWSPENDING from the current version");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::function_matches;

    #[test]
    fn a_rotation_function_arn_names_a_function_by_its_name() {
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:pg-rotation";
        assert!(function_matches(arn, "pg-rotation"));
        assert!(function_matches(&format!("{arn}:live"), "pg-rotation"));
        assert!(function_matches("pg-rotation", "pg-rotation"));
        assert!(!function_matches(arn, "pg-rotation-2"));
        assert!(!function_matches("arn:aws:lambda:eu-west-1:123456789012:function:other", "pg-rotation"));
    }
}
