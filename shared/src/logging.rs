//! Log lines in the shape Lambda's advanced logging controls use for JSON logs: one object per
//! line with `timestamp` (RFC 3339, UTC), `level`, `message` and `requestId` at the top level, and
//! every field of the enclosing spans and of the event beside them, in camelCase
//! (`secretId`, `step`, `token`, `engine`, `durationMs`, `outcome`, `errorType`).
//!
//! `tracing-subscriber`'s own JSON format nests the message under `fields` and span fields under
//! `spans`, which neither Lambda's level filtering nor Logs Insights reads; this small layer
//! writes the flat shape instead. Values go through `serde_json`, so no field can break a line.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_runtime::tracing::subscriber::Layer;
use lambda_runtime::tracing::subscriber::filter::{EnvFilter, LevelFilter};
use lambda_runtime::tracing::subscriber::fmt::MakeWriter;
use lambda_runtime::tracing::subscriber::layer::Context;
use lambda_runtime::tracing::subscriber::registry::LookupSpan;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};

/// Keys the layer writes itself; a field of the same name never replaces them.
const RESERVED: [&str; 3] = ["timestamp", "level", "message"];

/// The log level filter. Lambda's `AWS_LAMBDA_LOG_LEVEL` (what the function's logging
/// configuration sets) wins; without it `RUST_LOG` applies, with its full directive syntax
/// (`rotation=debug,info`); without either, INFO. The caller caps it at DEBUG.
pub(crate) fn level_filter(lookup: &dyn Fn(&str) -> Option<String>) -> EnvFilter {
    let lambda_level = lookup("AWS_LAMBDA_LOG_LEVEL").and_then(|level| parse_lambda_level(&level));
    match lambda_level {
        Some(level) => EnvFilter::builder().with_default_directive(level.into()).parse_lossy(""),
        None => EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse_lossy(lookup("RUST_LOG").unwrap_or_default()),
    }
}

/// Lambda's levels are TRACE, DEBUG, INFO, WARN, ERROR and FATAL; tracing has no FATAL.
fn parse_lambda_level(level: &str) -> Option<LevelFilter> {
    let level = level.trim();
    if level.eq_ignore_ascii_case("fatal") {
        return Some(LevelFilter::ERROR);
    }
    level.parse().ok().filter(|_| !level.is_empty())
}

/// The layer that writes Lambda-shaped JSON lines to `writer`.
pub(crate) struct LambdaJson<W> {
    writer: W,
}

impl<W> LambdaJson<W> {
    pub(crate) fn new(writer: W) -> Self {
        LambdaJson { writer }
    }
}

/// A span's fields, camelCased, kept in the span's extensions.
struct SpanFields(Map<String, Value>);

impl<S, W> Layer<S> for LambdaJson<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.0));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(map)) = extensions.get_mut::<SpanFields>() {
            let mut fields = Fields(std::mem::take(map));
            values.record(&mut fields);
            *map = fields.0;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(rfc3339(SystemTime::now())));
        line.insert("level".into(), Value::String(level_name(event.metadata().level()).into()));
        line.insert("message".into(), Value::String(String::new()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    merge(&mut line, fields);
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        merge(&mut line, &fields.0);
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per line, so lines from concurrent writers never interleave.
        let _ = self.writer.make_writer_for(event.metadata()).write_all(text.as_bytes());
    }
}

fn merge(line: &mut Map<String, Value>, fields: &Map<String, Value>) {
    for (key, value) in fields {
        if !RESERVED.contains(&key.as_str()) {
            line.insert(key.clone(), value.clone());
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Collects fields as JSON values under camelCase names.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(camel_case(field.name()), value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// `secret_id` → `secretId`; names without underscores are kept (`requestId` stays).
fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-11-28T09:15:02.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lambda_runtime::tracing::subscriber::{prelude::*, registry};
    use serde_json::json;
    use tracing::Instrument;

    use super::*;
    use crate::testing::{FakeDb, FakeTarget, MemoryStore};
    use crate::{DatabaseRotation, Rotator, Settings, Target};

    const FIRST: &str = "11111111-1111-4111-8111-111111111111";
    const TOKEN: &str = "22222222-2222-4222-8222-222222222222";
    const ROTATION_TOKEN: &str = "rotation-token-e1d2c3b4a5";
    const OLD_PASSWORD: &str = "Old-Password-7f3a9c";

    thread_local! {
        /// Where the test subscriber writes on this thread; lines from other threads are dropped.
        static CAPTURE: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { std::cell::RefCell::new(None) };
    }

    /// Writes to this thread's capture buffer, if any.
    struct ThreadCapture;

    impl Write for ThreadCapture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            CAPTURE.with(|capture| {
                if let Some(buffer) = capture.borrow().as_ref() {
                    buffer.lock().unwrap().extend_from_slice(buf);
                }
            });
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines written by the layer on this thread from now on. The subscriber is the global one:
    /// a thread-scoped subscriber races with other tests' threads over tracing's per-call-site
    /// cache of which levels are enabled, and loses lines.
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn start() -> Self {
            static INSTALL: std::sync::Once = std::sync::Once::new();
            INSTALL.call_once(|| {
                let subscriber = registry().with(LevelFilter::DEBUG).with(LambdaJson::new(|| ThreadCapture));
                tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in unit tests");
            });
            let buffer = Arc::new(Mutex::new(Vec::new()));
            CAPTURE.with(|capture| *capture.borrow_mut() = Some(buffer.clone()));
            Captured(buffer)
        }

        fn lines(&self) -> Vec<Value> {
            CAPTURE.with(|capture| *capture.borrow_mut() = None);
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains(ROTATION_TOKEN), "the RotationToken was logged: {text}");
            assert!(!text.contains(OLD_PASSWORD), "a password was logged: {text}");
            text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
        }
    }

    fn rotator() -> (Rotator<MemoryStore, DatabaseRotation<FakeTarget>>, String) {
        let store = MemoryStore::new();
        let value = json!({"engine": "postgres", "host": "db.example", "username": "app", "password": OLD_PASSWORD});
        let arn = store.create_secret("prod/app", FIRST, &value);
        store.start_rotation(&arn, TOKEN);
        let db = FakeDb::new();
        db.set_user_password("app", OLD_PASSWORD);
        let settings = Settings::from_lookup(&|_| None, &FakeTarget::ENGINE).unwrap();
        (Rotator::new(store, DatabaseRotation::new(FakeTarget::with_db(db), settings)), arn)
    }

    fn event(arn: &str, step: &str, token: &str) -> Value {
        json!({"Step": step, "SecretId": arn, "ClientRequestToken": token, "RotationToken": ROTATION_TOKEN})
    }

    fn is_rfc3339_utc(text: &str) -> bool {
        let b = text.as_bytes();
        text.len() == 24
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                23 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    #[tokio::test]
    async fn a_rotation_logs_flat_lambda_json_lines() {
        let captured = Captured::start();
        let (rotator, arn) = rotator();

        for (n, step) in ["createSecret", "setSecret", "testSecret", "finishSecret"].into_iter().enumerate() {
            // What lambda_runtime wraps every invocation in.
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = format!("req-{n}"));
            rotator.handle(event(&arn, step, TOKEN)).instrument(invoke).await.unwrap();
        }
        let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-bad");
        let unknown = "33333333-3333-4333-8333-333333333333";
        rotator.handle(event(&arn, "setSecret", unknown)).instrument(invoke).await.unwrap_err();

        let lines = captured.lines();
        for line in &lines {
            assert!(is_rfc3339_utc(line["timestamp"].as_str().unwrap()), "{line}");
            assert!(["DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap()), "{line}");
            assert!(line["message"].is_string(), "{line}");
            assert!(line["requestId"].as_str().unwrap().starts_with("req-"), "{line}");
            assert!(line.get("fields").is_none() && line.get("spans").is_none(), "{line}");
        }
        let finished: Vec<&Value> = lines.iter().filter(|l| l["message"] == "step finished").collect();
        assert_eq!(finished.len(), 4, "{lines:#?}");
        for (n, (line, step)) in
            finished.iter().zip(["createSecret", "setSecret", "testSecret", "finishSecret"]).enumerate()
        {
            assert_eq!(line["level"], "INFO");
            assert_eq!(line["requestId"], format!("req-{n}"));
            assert_eq!(line["secretId"], arn.as_str());
            assert_eq!(line["step"], step);
            assert_eq!(line["token"], TOKEN);
            assert_eq!(line["engine"], FakeTarget::ENGINE.label);
            assert_eq!(line["outcome"], "success");
            assert!(line["durationMs"].is_u64(), "{line}");
        }
        let failed = lines.iter().find(|l| l["message"] == "step failed").expect("a failed step is logged");
        assert_eq!(failed["level"], "ERROR");
        assert_eq!(failed["requestId"], "req-bad");
        assert_eq!(failed["step"], "setSecret");
        assert_eq!(failed["token"], unknown);
        assert_eq!(failed["outcome"], "failure");
        assert!(failed["errorType"].as_str().unwrap().starts_with("Permanent."), "{failed}");
        assert!(failed["error"].as_str().unwrap().contains(unknown), "{failed}");
    }

    #[tokio::test]
    async fn a_check_logs_one_line_with_the_counts_and_no_value() {
        let captured = Captured::start();
        let (rotator, arn) = rotator();
        let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-check");
        let report = rotator.handle(json!({"Action": "check", "SecretId": arn})).instrument(invoke).await.unwrap();
        let lines = captured.lines();
        let finished: Vec<&Value> = lines.iter().filter(|l| l["message"] == "check finished").collect();
        assert_eq!(finished.len(), 1, "{lines:#?}");
        let line = finished[0];
        assert_eq!(line["requestId"], "req-check");
        assert_eq!(line["engine"], FakeTarget::ENGINE.label);
        // The rotation the fixture started left AWSPENDING on a version: that check fails.
        assert_eq!(line["outcome"], "failed");
        assert_eq!(line["failed"], 1, "{line}");
        assert_eq!(line["failedChecks"], "rotation.pending", "{line}");
        let checks = report["checks"].as_array().unwrap();
        let count = |status: &str| checks.iter().filter(|c| c["status"] == status).count() as u64;
        assert_eq!(line["passed"], count("passed"), "{line}");
        assert_eq!(line["skipped"], count("skipped"), "{line}");
        assert!(lines.iter().all(|l| l.get("step").is_none()), "a check is no rotation step: {lines:#?}");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.250Z, a leap day.
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_709_251_199_250)), "2024-02-29T23:59:59.250Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_800)), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn field_names_become_camel_case() {
        assert_eq!(camel_case("secret_id"), "secretId");
        assert_eq!(camel_case("duration_ms"), "durationMs");
        assert_eq!(camel_case("requestId"), "requestId");
        assert_eq!(camel_case("step"), "step");
    }

    fn filter(vars: &[(&str, &str)]) -> String {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        level_filter(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).to_string()
    }

    #[test]
    fn lambda_log_level_wins_over_rust_log() {
        assert_eq!(filter(&[]), "info");
        assert_eq!(filter(&[("RUST_LOG", "rotation=debug,warn")]), "rotation=debug,warn");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", "ERROR"), ("RUST_LOG", "debug")]), "error");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]), "error");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", ""), ("RUST_LOG", "debug")]), "debug");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", "nonsense"), ("RUST_LOG", "warn")]), "warn");
    }
}
