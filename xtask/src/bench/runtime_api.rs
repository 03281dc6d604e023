//! The Lambda runtime API, served on a loopback port for one function process.
//!
//! The function asks for work with `GET /2018-06-01/runtime/invocation/next` (a long poll),
//! gets one event with its request id and deadline in headers, and answers with
//! `POST /2018-06-01/runtime/invocation/<id>/response` or `.../<id>/error`. An invocation is
//! timed here from handing out the event to receiving the answer, as Lambda bills it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";
/// The deadline handed to the function with each event, as a Lambda timeout would set it.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the bench waits for an answer before it gives up on the function.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How one invocation ended.
pub struct Completion {
    /// From handing out the event to receiving the function's answer.
    pub elapsed: Duration,
    /// The response body, or the error body (`errorType`, `errorMessage`).
    pub outcome: Result<Value, Value>,
}

/// An event waiting for the function's next request for work.
struct Queued {
    event: Value,
    done: oneshot::Sender<Completion>,
}

struct State {
    function_arn: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    /// Request id -> when its event was handed out, and who waits for the answer.
    in_flight: Mutex<HashMap<String, (Instant, oneshot::Sender<Completion>)>>,
    /// When the first request for work arrived: the end of the function's init phase.
    first_next: OnceLock<Instant>,
    init_error: OnceLock<String>,
}

pub struct RuntimeApi {
    pub address: SocketAddr,
    queue: mpsc::Sender<Queued>,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start(function_name: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (queue, receiver) = mpsc::channel(1);
        let state = Arc::new(State {
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
            queue: tokio::sync::Mutex::new(receiver),
            in_flight: Mutex::new(HashMap::new()),
            first_next: OnceLock::new(),
            init_error: OnceLock::new(),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(RuntimeApi { address, queue, state, task })
    }

    /// Waits for the function's first request for work; returns when it arrived.
    pub async fn first_request(&self, timeout: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            if let Some(at) = self.state.first_next.get() {
                return Ok(*at);
            }
            if let Some(error) = self.state.init_error.get() {
                bail!("the function reported an init error: {error}");
            }
            if started.elapsed() > timeout {
                bail!("the function did not ask for work within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Hands `event` to the function and waits for its answer.
    pub async fn invoke(&self, event: Value) -> Result<Completion> {
        let (done, answer) = oneshot::channel();
        self.queue.send(Queued { event, done }).await.context("the runtime API has stopped")?;
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .with_context(|| format!("the function did not answer within {ANSWER_TIMEOUT:?}"))?
            .context("the runtime API dropped the invocation")
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(stream, state.clone()));
    }
}

/// One HTTP/1.1 connection of the function's runtime client: requests one after the other.
async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    while let Ok(Some(request)) = read_request(&mut reader).await {
        let response = handle(&state, request).await;
        if writer.write_all(&response).await.is_err() {
            return;
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    received: Instant,
}

async fn handle(state: &State, request: Request) -> Vec<u8> {
    if request.method == "GET" && request.path == NEXT {
        let _ = state.first_next.set(request.received);
        let Some(Queued { event, done }) = state.queue.lock().await.recv().await else {
            return http_response("500 Internal Server Error", &[], b"{}");
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + FUNCTION_TIMEOUT;
        let headers = [
            ("Lambda-Runtime-Aws-Request-Id", request_id.clone()),
            ("Lambda-Runtime-Deadline-Ms", deadline.as_millis().to_string()),
            ("Lambda-Runtime-Invoked-Function-Arn", state.function_arn.clone()),
        ];
        let response = http_response("200 OK", &headers, event.to_string().as_bytes());
        // The clock starts as the event leaves: the write that follows is the hand-over.
        state.in_flight.lock().unwrap().insert(request_id, (Instant::now(), done));
        return response;
    }
    if request.method == "POST" && request.path == INIT_ERROR {
        let _ = state.init_error.set(String::from_utf8_lossy(&request.body).into_owned());
        return http_response("202 Accepted", &[], br#"{"status":"OK"}"#);
    }
    if request.method == "POST"
        && let Some(rest) = request.path.strip_prefix(INVOCATION)
        && let Some((request_id, kind)) = rest.split_once('/')
        && (kind == "response" || kind == "error")
    {
        let Some((handed_out, done)) = state.in_flight.lock().unwrap().remove(request_id) else {
            return http_response("400 Bad Request", &[], br#"{"errorMessage":"unknown request id"}"#);
        };
        let body: Value = serde_json::from_slice(&request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()));
        let outcome = if kind == "response" { Ok(body) } else { Err(body) };
        let _ = done.send(Completion { elapsed: request.received - handed_out, outcome });
        return http_response("202 Accepted", &[], br#"{"status":"OK"}"#);
    }
    http_response("404 Not Found", &[], br#"{"errorMessage":"not part of this runtime API"}"#)
}

fn http_response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut response = head.into_bytes();
    response.extend_from_slice(body);
    response
}

/// Reads one request (`None` at the end of the connection). Bodies come with a
/// `Content-Length` or chunked.
async fn read_request<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let (mut length, mut chunked) = (0, false);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed in the middle of a request");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().context("Content-Length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size =
                usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16).context("chunk size")?;
            let mut chunk = vec![0; size + 2]; // the data and its CRLF
            reader.read_exact(&mut chunk).await?;
            if size == 0 {
                break; // no trailers are sent by the runtime client
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
    }
    Ok(Some(Request { method, path, body, received: Instant::now() }))
}
