//! A minimal Lambda runtime API for one function process, so a test can run the same function
//! in several processes at once ([`FunctionProcess`]): `cargo lambda watch` serialises
//! invocations, Lambda does not.
//!
//! Served: `GET /2018-06-01/runtime/invocation/next` (blocks until an event is queued),
//! `POST /2018-06-01/runtime/invocation/{id}/response`, `POST .../invocation/{id}/error` and
//! `POST /2018-06-01/runtime/init/error`, over HTTP/1.1 with keep-alive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::TestEnv;

/// What an invocation answered: the function's JSON result, or (errorType, errorMessage).
pub type Outcome = Result<Value, (String, String)>;

/// How long [`FunctionProcess::invoke`] waits for an answer.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(90);

struct State {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// When the function took each invocation (`GET .../invocation/next`).
    served: Mutex<HashMap<String, Instant>>,
    init_error: Mutex<Option<(String, String)>>,
    function_arn: String,
}

/// An invocation's outcome, when the function took it and when it answered.
#[derive(Debug)]
pub struct Timed {
    pub outcome: Outcome,
    pub served: Instant,
    pub answered: Instant,
}

/// The runtime API of one function process, on a loopback port of its own.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
    queue: mpsc::UnboundedSender<(String, Value)>,
    task: JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start(function_name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the runtime API");
        let addr = listener.local_addr().expect("the runtime API's address");
        let (queue, events) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            events: tokio::sync::Mutex::new(events),
            waiting: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
        });
        let task = tokio::spawn(accept(listener, state.clone()));
        RuntimeApi { addr, state, queue, task }
    }

    /// Queues `event` for the next `GET .../invocation/next` and waits for its answer.
    pub async fn invoke(&self, event: &Value) -> Outcome {
        self.invoke_timed(event).await.outcome
    }

    /// As [`RuntimeApi::invoke`], and when the function took the event and when it answered.
    pub async fn invoke_timed(&self, event: &Value) -> Timed {
        let id = uuid::Uuid::new_v4().to_string();
        let outcome = self.invoke_with_id(&id, event).await;
        let answered = Instant::now();
        let served = self.state.served.lock().unwrap().remove(&id).unwrap_or(answered);
        Timed { outcome, served, answered }
    }

    async fn invoke_with_id(&self, id: &str, event: &Value) -> Outcome {
        let id = id.to_owned();
        let (sender, receiver) = oneshot::channel();
        self.state.waiting.lock().unwrap().insert(id.clone(), sender);
        self.queue.send((id.clone(), event.clone())).expect("the runtime API is serving");
        match tokio::time::timeout(INVOCATION_TIMEOUT, receiver).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                self.state.waiting.lock().unwrap().remove(&id);
                let init = self.state.init_error.lock().unwrap().clone();
                panic!("invocation {id} got no answer within {INVOCATION_TIMEOUT:?} (init error: {init:?})")
            }
        }
    }

    /// What the function reported at `POST /runtime/init/error`, if it did.
    pub fn init_error(&self) -> Option<(String, String)> {
        self.state.init_error.lock().unwrap().clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    // Connections live in this set, so aborting the accept loop drops them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        connections.spawn(serve_connection(stream, state.clone()));
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse().ok()?;
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                // The CRLF after the last chunk (no trailers expected).
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).await.ok()?;
    }
    Some(Request { method, path, body })
}

async fn write_response(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> bool {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.is_ok() && stream.write_all(body).await.is_ok()
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader).await {
        let path = request.path.trim_start_matches("/2018-06-01/runtime/");
        let accepted = br#"{"status":"OK"}"#;
        let written = match (request.method.as_str(), path) {
            ("GET", "invocation/next") => {
                let next = state.events.lock().await.recv().await;
                let Some((id, event)) = next else { return };
                state.served.lock().unwrap().insert(id.clone(), Instant::now());
                let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(60);
                let headers = [
                    ("Lambda-Runtime-Aws-Request-Id", id),
                    ("Lambda-Runtime-Deadline-Ms", deadline.as_millis().to_string()),
                    ("Lambda-Runtime-Invoked-Function-Arn", state.function_arn.clone()),
                ];
                write_response(reader.get_mut(), "200 OK", &headers, event.to_string().as_bytes()).await
            }
            ("POST", "init/error") => {
                *state.init_error.lock().unwrap() = Some(error_of(&request.body));
                write_response(reader.get_mut(), "202 Accepted", &[], accepted).await
            }
            ("POST", invocation) if invocation.starts_with("invocation/") => {
                let rest = &invocation["invocation/".len()..];
                let outcome = match rest.rsplit_once('/') {
                    Some((id, "response")) => {
                        Some((id, Ok(serde_json::from_slice(&request.body).unwrap_or(Value::Null))))
                    }
                    Some((id, "error")) => Some((id, Err(error_of(&request.body)))),
                    _ => None,
                };
                match outcome.and_then(|(id, outcome)| Some((state.waiting.lock().unwrap().remove(id)?, outcome))) {
                    Some((waiter, outcome)) => {
                        let _ = waiter.send(outcome);
                        write_response(reader.get_mut(), "202 Accepted", &[], accepted).await
                    }
                    None => write_response(reader.get_mut(), "404 Not Found", &[], b"{}").await,
                }
            }
            _ => write_response(reader.get_mut(), "404 Not Found", &[], b"{}").await,
        };
        if !written {
            return;
        }
    }
}

fn error_of(body: &[u8]) -> (String, String) {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    (field("errorType"), field("errorMessage"))
}

/// A function binary `cargo xtask test` built (`target/debug/<name>`), running with the
/// variables it gets under `cargo lambda watch` and a [`RuntimeApi`] of its own. Killed on drop.
pub struct FunctionProcess {
    pub name: String,
    pub api: RuntimeApi,
    /// Where the process's output goes.
    pub log: PathBuf,
    child: tokio::process::Child,
}

impl FunctionProcess {
    pub async fn start(env: &TestEnv, name: &str) -> Self {
        let api = RuntimeApi::start(name).await;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let binary = target.join("debug").join(name);
        assert!(
            binary.exists(),
            "{} is missing: run the tests with `cargo xtask test`, which builds it",
            binary.display()
        );
        let log_dir =
            std::path::Path::new(&env.functions_log).parent().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let log = log_dir.join(format!("{}.log", crate::unique(name)));
        let output = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_ENDPOINT_URL", &env.aws_endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("CA_BUNDLE_PATH", &env.ca_path)
            .env("CONNECT_TIMEOUT_SECONDS", "3")
            .env("STATEMENT_TIMEOUT_SECONDS", "2")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the log file"))
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        FunctionProcess { name: name.to_owned(), api, log, child }
    }

    /// Invokes the function with `event`: its JSON result, or (errorType, errorMessage).
    pub async fn invoke(&self, event: &Value) -> Outcome {
        self.api.invoke(event).await
    }

    /// Invokes one rotation step.
    pub async fn step(&self, step: &str, secret_id: &str, token: &str) -> Outcome {
        self.step_timed(step, secret_id, token).await.outcome
    }

    /// As [`FunctionProcess::step`], with when the function took the event and answered.
    pub async fn step_timed(&self, step: &str, secret_id: &str, token: &str) -> Timed {
        self.api
            .invoke_timed(&serde_json::json!({ "Step": step, "SecretId": secret_id, "ClientRequestToken": token }))
            .await
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the process SIGKILL, without waiting: an invocation in flight never answers.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
