//! One CloudWatch Embedded Metric Format record per step, written to stdout: CloudWatch Logs
//! turns it into metrics with no API call and no agent.
//!
//! Namespace: `METRICS_NAMESPACE` (default `SecretsManagerRotation`). Dimensions: `FunctionName`
//! (`AWS_LAMBDA_FUNCTION_NAME`) and `Step`. Metrics: `Duration` (milliseconds), `Success` and
//! `Failure` (counts, 0 or 1). Also in the record, as properties: `secretId`, `engine`,
//! `outcome` and, for a failure, `errorType`.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const DEFAULT_NAMESPACE: &str = "SecretsManagerRotation";

/// What one step reports.
pub(crate) struct StepRecord<'a> {
    pub step: &'a str,
    pub secret_id: &'a str,
    pub engine: &'a str,
    pub duration_ms: u64,
    /// `None` on success, the error type on failure.
    pub error_type: Option<String>,
}

struct Config {
    namespace: String,
    function: String,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        Config {
            namespace: var("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            function: var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "local".to_owned()),
        }
    })
}

/// The EMF record of one step.
pub(crate) fn emf_record(namespace: &str, function: &str, record: &StepRecord<'_>, timestamp_ms: u64) -> Value {
    let failed = record.error_type.is_some();
    let mut value = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName", "Step"]],
                "Metrics": [
                    {"Name": "Duration", "Unit": "Milliseconds"},
                    {"Name": "Success", "Unit": "Count"},
                    {"Name": "Failure", "Unit": "Count"},
                ],
            }],
        },
        "FunctionName": function,
        "Step": record.step,
        "Duration": record.duration_ms,
        "Success": u8::from(!failed),
        "Failure": u8::from(failed),
        "secretId": record.secret_id,
        "engine": record.engine,
        "outcome": if failed { "failure" } else { "success" },
    });
    if let Some(error_type) = &record.error_type {
        value["errorType"] = Value::String(error_type.clone());
    }
    value
}

/// Writes the step's record to stdout as one line.
pub(crate) fn emit(record: &StepRecord<'_>) {
    let config = config();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let line = emf_record(&config.namespace, &config.function, record, now).to_string();
    write_line(line);
}

#[cfg(not(test))]
fn write_line(line: String) {
    use std::io::Write;
    // One write per record, so a log line never lands inside it; a closed stdout is not an error
    // a rotation should fail on.
    let _ = std::io::stdout().lock().write_all(format!("{line}\n").as_bytes());
}

#[cfg(test)]
thread_local! {
    /// Records emitted on this thread, for tests.
    pub(crate) static EMITTED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
fn write_line(line: String) {
    EMITTED.with(|emitted| emitted.borrow_mut().push(line));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeDb, FakeTarget, MemoryStore};
    use crate::{DatabaseRotation, Rotator, Settings, Target};

    const FIRST: &str = "11111111-1111-4111-8111-111111111111";
    const TOKEN: &str = "22222222-2222-4222-8222-222222222222";
    const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

    /// (dimension, value) pairs.
    type Dimensions = Vec<(String, String)>;
    /// (name, unit, value) triples.
    type Metrics = Vec<(String, String, f64)>;

    /// Checks `record` against the EMF specification's structure and returns its
    /// namespace, dimension values and metric values.
    fn parse_emf(record: &Value) -> (String, Dimensions, Metrics) {
        let aws = record["_aws"].as_object().expect("an _aws object");
        assert!(aws["Timestamp"].is_u64(), "Timestamp: milliseconds since the epoch");
        let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics is an array");
        assert_eq!(directives.len(), 1);
        let directive = &directives[0];
        let namespace = directive["Namespace"].as_str().expect("a Namespace").to_owned();
        let sets = directive["Dimensions"].as_array().expect("Dimensions: an array of dimension sets");
        let mut dimensions = Vec::new();
        for set in sets {
            for name in set.as_array().expect("a dimension set is an array") {
                let name = name.as_str().unwrap();
                let value = record[name].as_str().unwrap_or_else(|| panic!("dimension {name}: a top-level string"));
                dimensions.push((name.to_owned(), value.to_owned()));
            }
        }
        let mut metrics = Vec::new();
        for metric in directive["Metrics"].as_array().expect("Metrics is an array") {
            let name = metric["Name"].as_str().expect("a metric Name");
            let unit = metric["Unit"].as_str().unwrap_or("None").to_owned();
            let value = record[name].as_f64().unwrap_or_else(|| panic!("metric {name}: a top-level number"));
            metrics.push((name.to_owned(), unit, value));
        }
        (namespace, dimensions, metrics)
    }

    #[test]
    fn a_failed_step_is_a_failure_count_with_its_error_type() {
        let record = StepRecord {
            step: "setSecret",
            secret_id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf",
            engine: "PostgreSQL",
            duration_ms: 1234,
            error_type: Some("Retryable.Unreachable".into()),
        };
        let value = emf_record("Custom/Rotation", "orders-rotation", &record, 1_700_000_000_000);
        let (namespace, dimensions, metrics) = parse_emf(&value);
        assert_eq!(namespace, "Custom/Rotation");
        assert_eq!(
            dimensions,
            [("FunctionName".into(), "orders-rotation".into()), ("Step".into(), "setSecret".into())]
        );
        assert_eq!(
            metrics,
            [
                ("Duration".into(), "Milliseconds".into(), 1234.0),
                ("Success".into(), "Count".into(), 0.0),
                ("Failure".into(), "Count".into(), 1.0),
            ]
        );
        assert_eq!(value["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(value["errorType"], "Retryable.Unreachable");
        assert_eq!(value["outcome"], "failure");
    }

    #[tokio::test]
    async fn every_step_emits_one_emf_record() {
        EMITTED.with(|emitted| emitted.borrow_mut().clear());
        let store = MemoryStore::new();
        let value =
            serde_json::json!({"engine": "postgres", "host": "db.example", "username": "app", "password": "Old-7f3a"});
        let arn = store.create_secret("prod/app", FIRST, &value);
        store.start_rotation(&arn, TOKEN);
        let db = FakeDb::new();
        db.set_user_password("app", "Old-7f3a");
        let settings = Settings::from_lookup(&|_| None, &FakeTarget::ENGINE).unwrap();
        let rotator = Rotator::new(store, DatabaseRotation::new(FakeTarget::with_db(db), settings));
        for step in STEPS {
            let event = serde_json::json!({"Step": step, "SecretId": arn, "ClientRequestToken": TOKEN});
            rotator.handle(event).await.unwrap();
        }
        let unknown = serde_json::json!({"Step": "testSecret", "SecretId": arn, "ClientRequestToken": "nope"});
        rotator.handle(unknown).await.unwrap_err();

        let records: Vec<Value> =
            EMITTED.with(|emitted| emitted.borrow().iter().map(|line| serde_json::from_str(line).unwrap()).collect());
        assert_eq!(records.len(), 5, "{records:#?}");
        for (record, step) in records.iter().zip(STEPS.iter().chain(["testSecret"].iter())) {
            let (namespace, dimensions, metrics) = parse_emf(record);
            assert_eq!(namespace, config().namespace);
            assert_eq!(dimensions[1], ("Step".to_owned(), step.to_string()));
            assert_eq!(dimensions[0].0, "FunctionName");
            assert_eq!(metrics.len(), 3);
            assert_eq!(record["secretId"], arn.as_str());
        }
        for record in &records[..4] {
            assert_eq!((record["Success"].as_u64(), record["Failure"].as_u64()), (Some(1), Some(0)));
        }
        assert_eq!((records[4]["Success"].as_u64(), records[4]["Failure"].as_u64()), (Some(0), Some(1)));
        assert!(records[4]["errorType"].as_str().unwrap().starts_with("Permanent."));
    }
}
