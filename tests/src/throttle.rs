//! An HTTP/1.1 proxy in front of LocalStack that throttles like Secrets Manager under load
//! (issue 11): a share of the requests gets Secrets Manager's JSON-protocol throttling answer
//! (`400`, `x-amzn-ErrorType: ThrottlingException`), the others are forwarded after a random
//! delay. The draws come from a seeded generator, one per request in the order requests
//! arrive, so a run's sequence of decisions is deterministic.
//!
//! Each request's head and `Content-Length` (or chunked) body is read, so a keep-alive
//! connection can carry several requests; each client connection gets an upstream connection
//! of its own, opened when a request is first forwarded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What Secrets Manager's JSON protocol answers to a throttled request.
pub const THROTTLING_BODY: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;

/// A deterministic generator (SplitMix64): no dependency, the same sequence for a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How the proxy treats requests.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub seed: u64,
    /// Requests throttled per 1000.
    pub throttle_per_mille: u64,
    /// A forwarded request waits a uniform 0..=`max_jitter` first.
    pub max_jitter: Duration,
}

/// Counters of a proxy's traffic.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: usize,
    pub throttled: usize,
    pub forwarded: usize,
    /// Requests whose `amz-sdk-request` header says `attempt=N` with N ≥ 2: the SDK's retries.
    pub sdk_retries: usize,
    /// Throttled requests that were the SDK's last attempt (`attempt=max`): no SDK retry follows.
    pub throttled_last_attempts: usize,
    /// Throttled requests per operation (`X-Amz-Target` without the service prefix).
    pub throttled_by_operation: BTreeMap<String, usize>,
    /// Requests the proxy could not forward (upstream unreachable or cut): answered 502.
    pub upstream_failures: usize,
}

struct Shared {
    policy: Policy,
    rng: Mutex<SplitMix64>,
    stats: Mutex<Stats>,
    connections: AtomicUsize,
}

/// The throttling proxy, on a loopback port of its own; stops on drop.
pub struct ThrottleProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ThrottleProxy {
    /// A proxy in front of `upstream` (`http://host:port`, LocalStack's endpoint).
    pub async fn start(upstream: &str, policy: Policy) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the throttling proxy");
        let addr = listener.local_addr().expect("the throttling proxy's address");
        let shared = Arc::new(Shared {
            policy,
            rng: Mutex::new(SplitMix64(policy.seed)),
            stats: Mutex::new(Stats::default()),
            connections: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept(listener, upstream, shared.clone()));
        ThrottleProxy { addr, shared, task }
    }

    /// The endpoint to give a client: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: String, shared: Arc<Shared>) {
    // Connections live in this set, so aborting the accept loop drops them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        connections.spawn(serve_connection(stream, upstream.clone(), shared.clone()));
        while connections.try_join_next().is_some() {}
    }
}

/// A request or response head as read (every line with its CRLF) and what framing it declares.
struct Head {
    raw: String,
    /// The first line, without CRLF.
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads a head; `None` at end of stream or on a malformed head.
async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<Head> {
    let mut raw = String::new();
    let mut start = String::new();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        raw.push_str(&line);
        let trimmed = line.trim_end();
        if start.is_empty() {
            if trimmed.is_empty() {
                // Tolerate a stray CRLF between messages.
                raw.clear();
                continue;
            }
            start = trimmed.to_owned();
            continue;
        }
        if trimmed.is_empty() {
            return Some(Head { raw, start, headers });
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// Reads the body the head declares, in its wire form (chunked stays chunked). `until_eof`:
/// a response with neither length nor chunking ends with the connection.
async fn read_body<R: AsyncBufReadExt + Unpin>(reader: &mut R, head: &Head, until_eof: bool) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked() {
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line).await.ok()? == 0 {
                return None;
            }
            body.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, if any, then the empty line.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.ok()? == 0 {
                        return None;
                    }
                    body.extend_from_slice(line.as_bytes());
                    if line.trim_end().is_empty() {
                        return Some(body);
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            body.extend_from_slice(&chunk);
        }
    } else if let Some(length) = head.content_length() {
        body.resize(length, 0);
        reader.read_exact(&mut body).await.ok()?;
    } else if until_eof {
        reader.read_to_end(&mut body).await.ok()?;
    }
    Some(body)
}

/// (attempt, max) from `amz-sdk-request: attempt=2; max=3`.
fn sdk_attempt(head: &Head) -> Option<(u32, u32)> {
    let value = head.header("amz-sdk-request")?;
    let field = |name: &str| {
        value.split(';').find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('=')?.trim().parse().ok())
    };
    Some((field("attempt")?, field("max")?))
}

async fn serve_connection(client: TcpStream, upstream: String, shared: Arc<Shared>) {
    let mut client = BufReader::new(client);
    let mut server: Option<BufReader<TcpStream>> = None;
    loop {
        let Some(request) = read_head(&mut client).await else { return };
        let Some(body) = read_body(&mut client, &request, false).await else { return };
        let (throttle, jitter) = {
            let mut rng = shared.rng.lock().unwrap();
            let draw = rng.next();
            let max_ms = shared.policy.max_jitter.as_millis() as u64;
            (draw % 1000 < shared.policy.throttle_per_mille, rng.next() % (max_ms + 1))
        };
        let attempt = sdk_attempt(&request);
        let operation = request
            .header("x-amz-target")
            .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
            .unwrap_or_else(|| request.start.clone());
        {
            let mut stats = shared.stats.lock().unwrap();
            stats.requests += 1;
            if attempt.is_some_and(|(n, _)| n >= 2) {
                stats.sdk_retries += 1;
            }
            if throttle {
                stats.throttled += 1;
                *stats.throttled_by_operation.entry(operation).or_default() += 1;
                if attempt.is_some_and(|(n, max)| n >= max) {
                    stats.throttled_last_attempts += 1;
                }
            } else {
                stats.forwarded += 1;
            }
        }
        let client_closes = request.closes();
        if throttle {
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\nx-amzn-RequestId: {}\r\nx-amzn-ErrorType: ThrottlingException\r\n\
                 Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                uuid::Uuid::new_v4(),
                THROTTLING_BODY.len()
            );
            let stream = client.get_mut();
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(THROTTLING_BODY.as_bytes()).await.is_err()
                || client_closes
            {
                return;
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        // One try on the kept upstream connection; when it was closed meanwhile (nothing came
        // back), one more on a new connection.
        let mut answered = None;
        for _ in 0..2 {
            if server.is_none() {
                match TcpStream::connect(upstream.as_str()).await {
                    Ok(stream) => server = Some(BufReader::new(stream)),
                    Err(_) => break,
                }
            }
            let upstream_stream = server.as_mut().unwrap();
            let sent = upstream_stream.get_mut().write_all(request.raw.as_bytes()).await.is_ok()
                && upstream_stream.get_mut().write_all(&body).await.is_ok();
            let response = if sent { read_head(upstream_stream).await } else { None };
            match response {
                Some(head) => {
                    let status = head.start.split_whitespace().nth(1).unwrap_or_default();
                    let bodiless = status == "204" || status == "304";
                    let body = if bodiless { Some(Vec::new()) } else { read_body(upstream_stream, &head, true).await };
                    let Some(body) = body else {
                        // Cut in the middle of the body: the client sees the cut too.
                        return;
                    };
                    answered = Some((head, body));
                    break;
                }
                None => server = None,
            }
        }
        let Some((head, body)) = answered else {
            shared.stats.lock().unwrap().upstream_failures += 1;
            let _ = client
                .get_mut()
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        };
        let status = head.start.split_whitespace().nth(1).unwrap_or_default();
        let unframed = !head.chunked() && head.content_length().is_none() && status != "204" && status != "304";
        let server_closes = head.closes() || unframed;
        let stream = client.get_mut();
        if stream.write_all(head.raw.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
            return;
        }
        if server_closes {
            server = None;
            if unframed {
                // The body ended with the connection: so must the client's.
                return;
            }
        }
        if client_closes {
            return;
        }
    }
}
