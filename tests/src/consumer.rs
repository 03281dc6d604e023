//! The consumer of self-issued API keys: a small plain-HTTP service on loopback that accepts
//! the keys of a secret the way a service that trusts Secrets Manager would, so the API-key
//! function's `test` call has a real counterpart.
//!
//! `cargo xtask test` runs it in a thread of its own process for the whole run (the functions
//! call it at the address written in the profiles document); [`TestEnv::consumer_url`] says
//! where.
//!
//! One request: `GET /check` with the headers
//! - `X-Secret-Id: <secret name or ARN>`: the secret whose keys are accepted (the profiles
//!   send the secret's own field `consumer_secret_id`: `X-Secret-Id: {field.consumer_secret_id}`);
//! - `Authorization: Bearer <key>`.
//!
//! It reads the versions staged `AWSCURRENT`, `AWSPREVIOUS` and `AWSPENDING` from LocalStack on
//! every request (the key is the `api_key` field of a JSON secret, or the whole string when the
//! secret is not a JSON object) and answers 200 when the key is one of them, 401 when not (or
//! when there is no bearer key), 400 without `X-Secret-Id`, 404 for another path.
//!
//! Two more paths play a provider's faults: `GET /redirect` answers 302 (to `/check`), and
//! `GET /slow` answers 200 only after [`SLOW_ANSWER`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::TestEnv;

/// The stages whose keys the consumer accepts.
pub const ACCEPTED_STAGES: [&str; 3] = ["AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"];

/// How long `GET /slow` takes to answer: longer than the function's `REQUEST_TIMEOUT_SECONDS`
/// in a test run (2).
pub const SLOW_ANSWER: Duration = Duration::from_secs(8);

/// A running consumer; stopped on drop.
pub struct Consumer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Consumer {
    /// Listens on a free loopback port and reads secrets from Secrets Manager at `aws_endpoint`.
    pub fn start(aws_endpoint: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let (endpoint, stopped) = (aws_endpoint.to_owned(), stop.clone());
        let thread = std::thread::Builder::new().name("api-key-consumer".into()).spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let endpoint = endpoint.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &endpoint);
                });
            }
        })?;
        Ok(Consumer { port, stop, thread: Some(thread) })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn handle(stream: TcpStream, aws_endpoint: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let (mut secret_id, mut bearer, mut length) = (None, None, 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        let Some((name, value)) = line.trim_end().split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "x-secret-id" => secret_id = Some(value.to_owned()),
            "authorization" => bearer = value.strip_prefix("Bearer ").map(|key| key.trim().to_owned()),
            "content-length" => length = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    // A body is allowed and ignored.
    std::io::copy(&mut reader.by_ref().take(length as u64), &mut std::io::sink())?;
    let path = target.split('?').next().unwrap_or_default();
    let (status, text) = if method == "GET" && path == "/redirect" {
        (302, "see /check")
    } else if method == "GET" && path == "/slow" {
        std::thread::sleep(SLOW_ANSWER);
        (200, "accepted, late")
    } else if method != "GET" || path != "/check" {
        (404, "only GET /check is served")
    } else if let Some(secret_id) = secret_id {
        match bearer {
            Some(key) if accepted_keys(aws_endpoint, &secret_id).contains(&key) => (200, "accepted"),
            _ => (401, "refused"),
        }
    } else {
        (400, "X-Secret-Id is missing")
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        302 => "Found",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let location = if status == 302 { "Location: /check\r\n" } else { "" };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\n{location}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// The keys of the versions staged [`ACCEPTED_STAGES`] (stages with no value are skipped).
pub fn accepted_keys(aws_endpoint: &str, secret_id: &str) -> Vec<String> {
    ACCEPTED_STAGES
        .iter()
        .filter_map(|stage| {
            let answer = secrets_manager(
                aws_endpoint,
                "GetSecretValue",
                &serde_json::json!({ "SecretId": secret_id, "VersionStage": stage }),
            )
            .ok()?;
            let text = answer["SecretString"].as_str()?;
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(fields)) => fields.get("api_key")?.as_str().map(str::to_owned),
                _ => Some(text.to_owned()),
            }
        })
        .collect()
}

/// One Secrets Manager call (JSON 1.1, unsigned: LocalStack does not check signatures) to the
/// endpoint of a test run; the answer, or the status and body of a refusal.
pub fn secrets_manager(
    aws_endpoint: &str,
    action: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, (u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(aws_endpoint)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", format!("secretsmanager.{action}"))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
        )
        .send(body.to_string())
        .map_err(|e| (0, e.to_string()))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(|e| (status, e.to_string()))?;
    if status != 200 {
        return Err((status, text));
    }
    serde_json::from_str(&text).map_err(|e| (status, format!("not JSON: {e}")))
}

/// Whether the consumer of the test run accepts `key` for `secret_id` (asked over HTTP, as the
/// function asks it). Panics on any answer but 200 or 401.
pub fn consumer_accepts(env: &TestEnv, secret_id: &str, key: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}check", env.consumer_url);
    let response = agent
        .get(&url)
        .header("X-Secret-Id", secret_id)
        .header("Authorization", format!("Bearer {key}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    match response.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("the consumer answered {other} for {secret_id}"),
    }
}
