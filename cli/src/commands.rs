//! The commands.

use std::time::Instant;

use rotation::check::{Report, Status};
use rotation::{Invoker, RotationEvent, Rotator, SecretStore, SecretsManager, Step, stage};
use serde_json::{Value, json};

use crate::aws::{self, SecretState};
use crate::capture::Notes;
use crate::kinds::{self, ApiKey, Db, Kind};
use crate::ui::{Colour, Ui};
use crate::{Command, Engine, EngineArg, FAILED, Failure, REFUSED_BY_STATE};

/// Runs `$f::<kind>(args)` for the kind of rotation `$engine` names.
macro_rules! dispatch {
    ($engine:expr, $f:ident ( $($arg:expr),* )) => {
        match $engine {
            Engine::Postgres => $f::<Db<postgres_rotation::Postgres>>($($arg),*).await,
            Engine::Mysql => $f::<Db<mysql_rotation::Mysql>>($($arg),*).await,
            Engine::Redshift => $f::<Db<redshift_rotation::Redshift>>($($arg),*).await,
            Engine::ApiKey => $f::<ApiKey>($($arg),*).await,
        }
    };
}

/// What every command works with.
pub struct Ctx<'a> {
    pub client: aws_sdk_secretsmanager::Client,
    pub store: SecretsManager,
    pub ui: &'a Ui,
    pub notes: &'a Notes,
}

pub async fn run(command: &Command, ui: &Ui, notes: &Notes) -> Result<Value, Failure> {
    let config = aws::config().await;
    let client = aws::secrets_client(&config);
    let ctx = Ctx { store: SecretsManager::new(client.clone()), client, ui, notes };
    match command {
        Command::Status { secret } => status(&ctx, secret).await,
        Command::Check { secret, engine: _, via_function: Some(function) } => {
            check_via_function(&ctx, &config, secret, function).await
        }
        Command::Check { secret, engine, via_function: None } => {
            let engine = resolve(&ctx, secret, *engine).await?;
            dispatch!(engine, check(&ctx, secret))
        }
        Command::Plan { secret, engine } => {
            let engine = resolve(&ctx, secret, *engine).await?;
            crate::plan::plan(&ctx, secret, engine).await
        }
        Command::Rotate { secret, engine, resume } => {
            let engine = resolve(&ctx, secret, *engine).await?;
            dispatch!(engine, rotate(&ctx, secret, *resume))
        }
        Command::Resume { secret, engine } => {
            let engine = resolve(&ctx, secret, *engine).await?;
            dispatch!(engine, resume(&ctx, secret))
        }
        Command::Cancel { secret, engine } => {
            let engine = resolve(&ctx, secret, *engine).await?;
            dispatch!(engine, cancel(&ctx, secret))
        }
    }
}

/// `--engine`, else the secret's `engine` field.
async fn resolve(ctx: &Ctx<'_>, secret: &str, engine: EngineArg) -> Result<Engine, Failure> {
    if let Some(engine) = engine.engine {
        return Ok(engine);
    }
    let text = ctx.store.get_value(secret, None, stage::CURRENT).await?;
    let field = text
        .and_then(|t| serde_json::from_str::<Value>(rotation::ExposeSecret::expose_secret(&t)).ok())
        .and_then(|v| v.get("engine").and_then(Value::as_str).map(str::to_owned));
    match field.as_deref().map(|f| (f, Engine::from_field(f))) {
        Some((_, Some(engine))) => Ok(engine),
        Some((found, None)) => Err(Failure::new(
            2,
            format!(
                "the `engine` field of secret {} is `{}`, which names no engine this command rotates: give \
                 --engine postgres, mysql, redshift or api-key",
                rotation::shown(secret),
                rotation::shown(found)
            ),
        )),
        None => Err(Failure::new(
            2,
            format!(
                "secret {} has no `engine` field: give --engine postgres, mysql, redshift or api-key",
                rotation::shown(secret)
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// status

async fn status(ctx: &Ctx<'_>, secret: &str) -> Result<Value, Failure> {
    let state = SecretState::read(&ctx.client, secret).await?;
    let ui = ctx.ui;
    let when = |d: Option<&aws_sdk_secretsmanager::primitives::DateTime>, none: &str| match d {
        Some(d) => format!("{} ({})", aws::date(Some(d)).unwrap_or_default(), aws::ago(d)),
        None => none.to_owned(),
    };
    let rows = vec![
        vec!["secret".into(), state.name.clone()],
        vec!["arn".into(), state.arn.clone()],
        vec!["rotation".into(), if state.rotation_enabled { "enabled".into() } else { "not enabled".into() }],
        vec!["schedule".into(), state.rules_text()],
        vec!["function".into(), state.function.clone().unwrap_or_else(|| "none".into())],
        vec!["last rotated".into(), when(state.last_rotated.as_ref(), "never")],
        vec!["next rotation".into(), when(state.next_rotation.as_ref(), "none scheduled")],
    ];
    for row in &rows {
        ui.line(format!("{:<14} {}", ui.paint(Colour::Bold, &format!("{:<13}", row[0])), row[1]).trim_end());
    }
    ui.line("");
    let mut table = vec![vec!["VERSION".to_owned(), "STAGES".into(), "CREATED".into()]];
    for v in &state.versions {
        table.push(vec![
            v.id.clone(),
            if v.stages.is_empty() { "-".into() } else { v.stages.join(", ") },
            aws::date(v.created.as_ref()).unwrap_or_else(|| "-".into()),
        ]);
    }
    ui.table(&table, |_, c, cell| (c == 1 && cell.contains(stage::PENDING)).then_some(Colour::Yellow));
    ui.line("");
    let in_progress = state.in_progress().map(|v| {
        let stuck = v.created.is_none_or(|d| aws::ago_seconds(&d) > STUCK_AFTER_SECONDS);
        let since = aws::date(v.created.as_ref());
        let advice = format!(
            "to finish it: rotation resume {secret}; to abandon it (once AWSCURRENT is proven to work): rotation cancel {secret}"
        );
        json!({"version": v.id, "since": since, "stuck": stuck, "advice": advice})
    });
    match &in_progress {
        Some(p) => {
            let since = match state.in_progress().and_then(|v| v.created) {
                Some(d) => format!("since {} ({})", aws::date(Some(&d)).unwrap_or_default(), aws::ago(&d)),
                None => "(no creation date: createSecret has not stored a value)".into(),
            };
            let what = if p["stuck"] == true {
                "a rotation is in progress and looks stuck"
            } else {
                "a rotation is in progress"
            };
            ui.line(ui.paint(
                Colour::Yellow,
                &format!("{what}: version {} is staged AWSPENDING {since}", p["version"].as_str().unwrap_or_default()),
            ));
            ui.line(format!("  {}", p["advice"].as_str().unwrap_or_default()));
        }
        None => ui.line("no rotation in progress"),
    }
    Ok(json!({
        "secret": state.name,
        "arn": state.arn,
        "rotation": {
            "enabled": state.rotation_enabled,
            "function": state.function,
            "rules": state.rules,
            "last_rotated": aws::date(state.last_rotated.as_ref()),
            "next_rotation": aws::date(state.next_rotation.as_ref()),
        },
        "versions": state.versions_json(),
        "in_progress": in_progress,
    }))
}

/// A rotation by Secrets Manager takes seconds; one pending for longer than this has stopped.
const STUCK_AFTER_SECONDS: i64 = 15 * 60;

// ---------------------------------------------------------------------------------------------
// check

fn show_report(ui: &Ui, report: &Report) {
    ui.line(format!("preflight of secret {} ({})", report.secret, report.engine));
    let mut rows = vec![vec!["CHECK".to_owned(), "RESULT".into(), "DETAIL".into()]];
    for check in &report.checks {
        let status = match check.status {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        rows.push(vec![check.name.clone(), status.into(), check.detail.clone()]);
        if let Some(fix) = &check.fix {
            rows.push(vec![String::new(), String::new(), format!("fix: {fix}")]);
        }
    }
    ui.table(&rows, |_, c, cell| match (c, cell) {
        (1, "passed") => Some(Colour::Green),
        (1, "FAILED") => Some(Colour::Red),
        (1, "skipped") => Some(Colour::Dim),
        _ => None,
    });
    let failed = report.checks.iter().filter(|c| c.status == Status::Failed).count();
    if failed == 0 {
        ui.line(ui.paint(Colour::Green, &format!("all {} checks passed", report.checks.len())));
    } else {
        ui.line(ui.paint(Colour::Red, &format!("{failed} of {} checks failed", report.checks.len())));
    }
}

/// The engine's preflight, as the function would run it.
async fn preflight<K: Kind>(ctx: &Ctx<'_>, secret: &str) -> Result<Report, Failure> {
    let rotator = Rotator::new(ctx.store.clone(), K::build()?);
    Ok(rotator.check(secret).await)
}

fn report_result(report: Report) -> Result<Value, Failure> {
    let doc = serde_json::to_value(&report).unwrap_or(Value::Null);
    if report.passed {
        Ok(doc)
    } else {
        let failed: Vec<_> =
            report.checks.iter().filter(|c| c.status == Status::Failed).map(|c| c.name.as_str()).collect();
        Err(Failure::failed(format!("the preflight of secret {} failed: {}", report.secret, failed.join(", ")))
            .with_doc(doc))
    }
}

async fn check<K: Kind>(ctx: &Ctx<'_>, secret: &str) -> Result<Value, Failure> {
    let report = preflight::<K>(ctx, secret).await?;
    show_report(ctx.ui, &report);
    report_result(report)
}

async fn check_via_function(
    ctx: &Ctx<'_>,
    config: &aws_config::SdkConfig,
    secret: &str,
    function: &str,
) -> Result<Value, Failure> {
    let lambda = aws_sdk_lambda::Client::new(config);
    let payload = json!({"Action": "check", "SecretId": secret});
    let shown_function = rotation::shown(function);
    let out = lambda
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
        .send()
        .await
        .map_err(|e| sdk_lambda_failure(&shown_function, e))?;
    let body: Value = out.payload().and_then(|p| serde_json::from_slice(p.as_ref()).ok()).unwrap_or(Value::Null);
    if let Some(kind) = out.function_error() {
        let message = body["errorMessage"].as_str().unwrap_or("no message");
        let error_type = body["errorType"].as_str().unwrap_or(kind);
        return Err(Failure::failed(format!(
            "function {shown_function} answered the check with {error_type}: {}",
            rotation::shown(message)
        )));
    }
    let report: Report = serde_json::from_value(body).map_err(|e| {
        Failure::failed(format!(
            "function {shown_function} did not answer with a preflight report ({e}): does its version support \
             {{\"Action\": \"check\"}}?"
        ))
    })?;
    show_report(ctx.ui, &report);
    report_result(report)
}

fn sdk_lambda_failure<E, R>(function: &str, error: aws_sdk_lambda::error::SdkError<E, R>) -> Failure
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match &error {
        aws_sdk_lambda::error::SdkError::ServiceError(service) => {
            let err = service.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or("no message"))
        }
        other => rotation::with_causes(other),
    };
    Failure::failed(format!("Lambda Invoke of function {function} failed: {detail}"))
}

// ---------------------------------------------------------------------------------------------
// rotate, resume, cancel

/// Runs `steps` with `token`, one line each; the steps' JSON and whether all succeeded.
async fn run_steps<K: Kind>(
    ctx: &Ctx<'_>,
    rotator: &Rotator<SecretsManager, K::R>,
    secret_id: &str,
    token: &str,
    steps: &[Step],
) -> (Vec<Value>, Option<rotation::Error>) {
    let mut done = Vec::new();
    let ui = ctx.ui;
    for &step in steps {
        let event =
            RotationEvent { step, secret_id: secret_id.to_owned(), token: token.to_owned(), rotation_token: None };
        ctx.notes.take();
        let started = Instant::now();
        let result = rotator.run_step_as(&event, Invoker::Operator).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let notes = ctx.notes.take();
        let (outcome, colour) = if result.is_ok() { ("ok", Colour::Green) } else { ("failed", Colour::Red) };
        ui.line(format!(
            "  {:<13} {} {:>9}",
            step.as_str(),
            ui.paint(colour, &format!("{outcome:<6}")),
            format!("{ms:.0} ms")
        ));
        for note in &notes {
            ui.line(ui.paint(Colour::Dim, &format!("      {note}")));
        }
        let mut entry = json!({"step": step.as_str(), "ok": result.is_ok(), "duration_ms": (ms * 10.0).round() / 10.0, "notes": notes});
        if let Err(error) = result {
            ui.line(format!("      {}", ui.paint(Colour::Red, &error.to_string())));
            entry["error"] = json!({"type": error.error_type(), "message": error.to_string()});
            done.push(entry);
            return (done, Some(error));
        }
        done.push(entry);
    }
    (done, None)
}

fn show_stages(ui: &Ui, title: &str, state: &SecretState) {
    ui.line(format!("{title}:"));
    let mut rows = vec![vec!["  VERSION".to_owned(), "STAGES".into()]];
    for v in state.versions.iter().filter(|v| !v.stages.is_empty()) {
        rows.push(vec![format!("  {}", v.id), v.stages.join(", ")]);
    }
    ui.table(&rows, |_, _, _| None);
}

fn in_progress_refusal(state: &SecretState, secret: &str, version: &aws::Version) -> Failure {
    let since =
        version.created.map(|d| format!(" since {}", aws::date(Some(&d)).unwrap_or_default())).unwrap_or_default();
    Failure::new(
        REFUSED_BY_STATE,
        format!(
            "a rotation of secret {} is in progress: version {} is staged AWSPENDING{since}. Finish it with \
             `rotation resume {secret}` (or `rotation rotate {secret} --resume`), or abandon it with `rotation cancel {secret}`",
            rotation::shown(&state.name),
            version.id
        ),
    )
    .with_doc(json!({"secret": state.name, "in_progress": {"version": version.id, "since": aws::date(version.created.as_ref())}, "stages": state.stages_json()}))
}

fn no_rotation_in_progress(state: &SecretState, command: &str) -> Failure {
    Failure::new(
        REFUSED_BY_STATE,
        format!(
            "no rotation of secret {} is in progress (no version other than AWSCURRENT is staged AWSPENDING): \
             nothing to {command}",
            rotation::shown(&state.name)
        ),
    )
    .with_doc(json!({"secret": state.name, "in_progress": null, "stages": state.stages_json()}))
}

async fn rotate<K: Kind>(ctx: &Ctx<'_>, secret: &str, resume: bool) -> Result<Value, Failure> {
    let rotation = K::build()?;
    let before = SecretState::read(&ctx.client, secret).await?;
    let (token, resumed) = match before.in_progress() {
        Some(version) if !resume => return Err(in_progress_refusal(&before, secret, version)),
        Some(version) => (version.id.clone(), true),
        None => (uuid::Uuid::new_v4().to_string(), false),
    };
    let rotator = Rotator::new(ctx.store.clone(), rotation);
    let ui = ctx.ui;
    ui.line(format!("rotating secret {} ({})", before.name, <K::R as rotation::Rotation>::LABEL));
    if resumed {
        ui.line(format!("resuming the rotation in progress: version {token}"));
    } else if resume {
        ui.line("no rotation in progress: starting a new one");
    }
    show_stages(ui, "before", &before);
    let steps = [Step::Create, Step::Set, Step::Test, Step::Finish];
    ui.line(format!("steps (version {token}):"));
    let (done, error) = run_steps::<K>(ctx, &rotator, &before.arn, &token, &steps).await;
    let after = SecretState::read(&ctx.client, secret).await?;
    show_stages(ui, "after", &after);
    let doc = json!({
        "secret": before.name,
        "engine": <K::R as rotation::Rotation>::LABEL,
        "version": token,
        "resumed": resumed,
        "steps": done,
        "before": before.stages_json(),
        "after": after.stages_json(),
    });
    match error {
        None => {
            ui.line(ui.paint(Colour::Green, &format!("rotated: version {token} is AWSCURRENT")));
            Ok(doc)
        }
        Some(error) => Err(Failure::failed(format!(
            "{error}. The rotation is left in progress (version {token} staged AWSPENDING): once the cause is \
             fixed, `rotation resume {secret}` continues it; `rotation cancel {secret}` abandons it"
        ))
        .with_doc(doc)),
    }
}

async fn resume<K: Kind>(ctx: &Ctx<'_>, secret: &str) -> Result<Value, Failure> {
    let rotation = K::build()?;
    let before = SecretState::read(&ctx.client, secret).await?;
    let Some(version) = before.in_progress().cloned() else {
        return Err(no_rotation_in_progress(&before, "resume"));
    };
    let token = version.id.clone();
    let ui = ctx.ui;
    let stored = ctx.store.get_value(&before.arn, Some(&token), stage::PENDING).await?.is_some();
    let since = version
        .created
        .map(|d| format!(" since {} ({})", aws::date(Some(&d)).unwrap_or_default(), aws::ago(&d)))
        .unwrap_or_default();
    let found = format!(
        "version {token} is staged AWSPENDING{since}; {}",
        if stored {
            "its value is stored (createSecret ran)"
        } else {
            "it holds no value yet (stopped before createSecret stored one): createSecret runs first"
        }
    );
    ui.line(format!("resuming the rotation of secret {} ({})", before.name, <K::R as rotation::Rotation>::LABEL));
    ui.line(format!("found: {found}"));
    show_stages(ui, "before", &before);
    let mut steps = vec![Step::Set, Step::Test, Step::Finish];
    if !stored {
        steps.insert(0, Step::Create);
    }
    let rotator = Rotator::new(ctx.store.clone(), rotation);
    ui.line("steps:");
    let (done, error) = run_steps::<K>(ctx, &rotator, &before.arn, &token, &steps).await;
    let after = SecretState::read(&ctx.client, secret).await?;
    show_stages(ui, "after", &after);
    let doc = json!({
        "secret": before.name,
        "engine": <K::R as rotation::Rotation>::LABEL,
        "version": token,
        "found": {"since": aws::date(version.created.as_ref()), "value_stored": stored},
        "steps": done,
        "before": before.stages_json(),
        "after": after.stages_json(),
    });
    match error {
        None => {
            ui.line(ui.paint(Colour::Green, &format!("resumed and finished: version {token} is AWSCURRENT")));
            Ok(doc)
        }
        Some(error) => Err(Failure::failed(format!(
            "{error}. The rotation is still in progress; fix the cause and run `rotation resume {secret}` again, or \
             `rotation cancel {secret}` to abandon it"
        ))
        .with_doc(doc)),
    }
}

async fn cancel<K: Kind>(ctx: &Ctx<'_>, secret: &str) -> Result<Value, Failure> {
    let before = SecretState::read(&ctx.client, secret).await?;
    let Some(version) = before.in_progress().cloned() else {
        return Err(no_rotation_in_progress(&before, "cancel"));
    };
    let ui = ctx.ui;
    ui.line(format!("cancelling the rotation of secret {}: version {} is staged AWSPENDING", before.name, version.id));
    ui.line("first, proving that the target still accepts AWSCURRENT:");
    let report = preflight::<K>(ctx, secret).await?;
    show_report(ui, &report);
    let report_doc = serde_json::to_value(&report).unwrap_or(Value::Null);
    let blocking = kinds::blocking_failures(&report);
    if !blocking.is_empty() {
        let failed: Vec<_> = blocking.iter().map(|c| format!("{}: {}", c.name, c.detail)).collect();
        return Err(Failure::new(
            FAILED,
            format!(
                "refused to cancel: the AWSCURRENT credentials are not proven to work ({}). The target may already \
                 use the pending version's credentials: finish the rotation with `rotation resume {secret}` instead",
                failed.join("; ")
            ),
        )
        .with_doc(json!({"secret": before.name, "version": version.id, "cancelled": false, "preflight": report_doc})));
    }
    ui.line(
        "AWSCURRENT works (no check of the target or the current credentials failed; rotation.pending is the \
         rotation being cancelled)",
    );
    ctx.store.move_stage(&before.arn, stage::PENDING, None, Some(&version.id)).await?;
    let after = SecretState::read(&ctx.client, secret).await?;
    show_stages(ui, "after", &after);
    ui.line(ui.paint(
        Colour::Green,
        &format!("cancelled: AWSPENDING removed from version {}; AWSCURRENT is unchanged", version.id),
    ));
    Ok(json!({
        "secret": before.name,
        "version": version.id,
        "cancelled": true,
        "preflight": report_doc,
        "before": before.stages_json(),
        "after": after.stages_json(),
    }))
}
