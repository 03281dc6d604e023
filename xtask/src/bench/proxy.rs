//! Counting TCP proxies on loopback ports, between the function and what it talks to.
//!
//! - Before a database, every accepted connection is one login (attempt).
//! - Before LocalStack, every `x-amz-target:` header line in the bytes the client sends is one
//!   Secrets Manager request (the AWS JSON protocol names the operation there, e.g.
//!   `secretsmanager.GetSecretValue`); the operation names are kept in order.
//!
//! The proxies count everything that passes; the bench reads the counters before and after each
//! invocation, which run one at a time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TARGET_HEADER: &[u8] = b"x-amz-target:";

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    operations: Mutex<Vec<String>>,
}

/// What a proxy had counted at one moment.
#[derive(Clone, Copy)]
pub struct Mark {
    connections: usize,
    operations: usize,
}

pub struct CountingProxy {
    pub port: u16,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, upstream, counters.clone()));
        Ok(CountingProxy { port, counters, task })
    }

    pub fn mark(&self) -> Mark {
        Mark {
            connections: self.counters.connections.load(Ordering::SeqCst),
            operations: self.counters.operations.lock().unwrap().len(),
        }
    }

    /// Connections accepted since `mark`.
    pub fn connections_since(&self, mark: Mark) -> usize {
        self.counters.connections.load(Ordering::SeqCst) - mark.connections
    }

    /// The `x-amz-target` operations requested since `mark`, in order.
    pub fn operations_since(&self, mark: Mark) -> Vec<String> {
        self.counters.operations.lock().unwrap()[mark.operations..].to_vec()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, counters: Arc<Counters>) {
    // Connections live in this set, so stopping the proxy closes them all.
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((inbound, _)) = listener.accept().await {
        counters.connections.fetch_add(1, Ordering::SeqCst);
        let counters = counters.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(upstream).await else { return };
            // The proxy must add no delay of its own: forward every write at once.
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (client_read, client_write) = inbound.into_split();
            let (server_read, server_write) = outbound.into_split();
            tokio::join!(forward(client_read, server_write, Some(&counters)), forward(server_read, client_write, None));
        });
    }
}

/// Copies one direction until it ends; with `counters`, scans the bytes for request headers.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counters: Option<&Counters>) {
    let mut buffer = vec![0; 16 * 1024];
    let mut scanner = HeaderScanner::default();
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(counters) = counters {
            // Counted before forwarding: a request is counted before its answer can exist.
            scanner.scan(&buffer[..n], |operation| counters.operations.lock().unwrap().push(operation));
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Finds `x-amz-target:` header lines in a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
struct HeaderScanner {
    /// The start of the current line (long lines, i.e. bodies, are cut: only prefixes matter).
    line: Vec<u8>,
}

impl HeaderScanner {
    const KEEP: usize = 256;

    fn scan(&mut self, bytes: &[u8], mut found: impl FnMut(String)) {
        for &byte in bytes {
            if byte == b'\n' {
                if self.line.len() >= TARGET_HEADER.len()
                    && self.line[..TARGET_HEADER.len()].eq_ignore_ascii_case(TARGET_HEADER)
                {
                    let value = String::from_utf8_lossy(&self.line[TARGET_HEADER.len()..]);
                    let value = value.trim();
                    found(value.rsplit('.').next().unwrap_or(value).to_owned());
                }
                self.line.clear();
            } else if self.line.len() < Self::KEEP {
                self.line.push(byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_target_headers_split_anywhere_and_ignores_bodies() {
        let stream = b"POST / HTTP/1.1\r\nX-Amz-Target: secretsmanager.DescribeSecret\r\ncontent-length: 20\r\n\r\n\
            {\"x-amz-target:\": 1}POST / HTTP/1.1\r\nx-amz-target:secretsmanager.GetSecretValue\r\n\r\n";
        for split in 0..stream.len() {
            let mut scanner = HeaderScanner::default();
            let mut found = Vec::new();
            scanner.scan(&stream[..split], |op| found.push(op));
            scanner.scan(&stream[split..], |op| found.push(op));
            assert_eq!(found, ["DescribeSecret", "GetSecretValue"], "split at {split}");
        }
    }
}
