//! The one HTTP client of the function: every call of every profile goes through
//! [`HttpClient::send`], which checks the URL against the allow-list, resolves the host once,
//! refuses internal addresses, connects to the address it checked, verifies TLS, sends one
//! HTTP/1.1 request, never follows a redirect and reads a bounded answer in bounded time.
//!
//! Header values and bodies, sent or received, are never logged, shown in an error or in a
//! `Debug` form.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use rotation::{Error, ExposeSecret, SecretString, TlsMode};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::{Host, Url};

use crate::profile::{is_loopback_host, plain_http_to_loopback};

/// One rendered call.
pub struct Request {
    pub profile: String,
    pub call: &'static str,
    pub method: String,
    pub url: Url,
    pub headers: Vec<(String, SecretString)>,
    pub body: Option<SecretString>,
}

/// Method, call, profile and the URL without its query: no header, no body.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("call", &self.call)
            .field("profile", &self.profile)
            .field("url", &shown_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// An answer: its status and its body (kept out of `Debug`).
pub struct Response {
    pub status: u16,
    body: Vec<u8>,
}

impl Response {
    /// An answer as the client reads it (also for test doubles of the transport).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response { status, body: body.into() }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").field("status", &self.status).field("body_bytes", &self.body.len()).finish()
    }
}

/// `scheme://host:port/path`: the URL as errors and logs show it (no query, no user info).
pub fn shown_url(url: &Url) -> String {
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0),
        url.path()
    )
}

/// How the client works.
#[derive(Clone)]
pub struct ClientSettings {
    pub allowed_url_prefixes: Vec<String>,
    pub allow_plain_http_to_loopback: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("allowed_url_prefixes", &self.allowed_url_prefixes)
            .field("allow_plain_http_to_loopback", &self.allow_plain_http_to_loopback)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// The largest answer read by default: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

impl ClientSettings {
    /// `CONNECT_TIMEOUT_SECONDS` (5), `REQUEST_TIMEOUT_SECONDS` (10), `CA_BUNDLE_PATH`,
    /// `ALLOW_PLAIN_HTTP_TO_LOOPBACK`.
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
        allowed_url_prefixes: Vec<String>,
    ) -> Result<Self, Error> {
        // The database functions' connection settings: CONNECT_TIMEOUT_SECONDS, and the TLS
        // configurations built once from Mozilla's roots and CA_BUNDLE_PATH.
        let connect = rotation::ConnectSettings::from_lookup(lookup)?;
        let request_timeout = rotation::seconds(lookup, "REQUEST_TIMEOUT_SECONDS", 10)?;
        let tls = connect
            .tls
            .for_mode(TlsMode::VerifyFull)
            .cloned()
            .ok_or_else(|| Error::Config { variable: "(TLS)", problem: "has no verify-full configuration".into() })?;
        Ok(ClientSettings {
            allowed_url_prefixes,
            allow_plain_http_to_loopback: plain_http_to_loopback(lookup)?,
            connect_timeout: connect.timeout,
            request_timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            tls,
        })
    }
}

/// An allowed prefix, and whether it names a host that may be internal.
struct Prefix {
    text: String,
    /// The prefix names `localhost`: loopback addresses are allowed.
    localhost: bool,
    /// The prefix names this IP literal: that address is allowed.
    ip: Option<IpAddr>,
}

/// The client: built once per process, shared by reference.
pub struct HttpClient {
    settings: ClientSettings,
    prefixes: Vec<Prefix>,
    connector: tokio_rustls::TlsConnector,
    /// Test-only name resolution, consulted before DNS.
    #[cfg(test)]
    hosts: Vec<(String, IpAddr)>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Why a call failed, before it is given its profile, call and URL.
enum Failure {
    NotAllowed(String),
    Failed { detail: String, retryable: bool },
}

fn failed(detail: impl Into<String>, retryable: bool) -> Failure {
    Failure::Failed { detail: detail.into(), retryable }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Ends the task driving a connection when the call is over (or abandoned at its deadline).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HttpClient {
    pub fn new(settings: ClientSettings) -> Result<Self, Error> {
        let mut prefixes = Vec::with_capacity(settings.allowed_url_prefixes.len());
        for text in &settings.allowed_url_prefixes {
            let url = Url::parse(text).map_err(|e| Error::Config {
                variable: "API_KEY_PROFILES",
                problem: format!("allowed_url_prefixes: `{text}` is not a URL ({e})"),
            })?;
            let (localhost, ip) = match url.host() {
                Some(Host::Domain(name)) => (name.eq_ignore_ascii_case("localhost"), None),
                Some(Host::Ipv4(ip)) => (false, Some(IpAddr::V4(ip))),
                Some(Host::Ipv6(ip)) => (false, Some(IpAddr::V6(ip))),
                None => (false, None),
            };
            prefixes.push(Prefix { text: text.clone(), localhost, ip });
        }
        let mut tls = (*settings.tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient {
            settings,
            prefixes,
            connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            #[cfg(test)]
            hosts: Vec::new(),
        })
    }

    /// Sends `request` and reads its answer. A 3xx is an answer like any other: never followed.
    pub async fn send(&self, request: &Request) -> Result<Response, Error> {
        let started = Instant::now();
        let url = shown_url(&request.url);
        let limit = rotation::deadline::bound(self.settings.request_timeout);
        let result = match tokio::time::timeout(limit, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(failed(format!("no complete answer within {} ms", limit.as_millis()), true)),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = result.as_ref().ok().map(|r| r.status);
        tracing::debug!(method = %request.method, call = request.call, url = %url, status = ?status, duration_ms, "HTTP call");
        result.map_err(|failure| match failure {
            Failure::NotAllowed(rule) => {
                Error::UrlNotAllowed { profile: request.profile.clone(), call: request.call, url, rule }
            }
            Failure::Failed { detail, retryable } => {
                Error::ProviderCall { profile: request.profile.clone(), call: request.call, url, detail, retryable }
            }
        })
    }

    /// The prefix `url` starts with (one that allows internal addresses first), and whether
    /// the scheme is allowed.
    fn check_url(&self, url: &Url) -> Result<Vec<&Prefix>, Failure> {
        let matching: Vec<&Prefix> = self.prefixes.iter().filter(|p| url.as_str().starts_with(&p.text)).collect();
        if matching.is_empty() {
            return Err(Failure::NotAllowed("it starts with none of allowed_url_prefixes".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Failure::NotAllowed("a URL may not hold a user name or password".into()));
        }
        match url.scheme() {
            "https" => {}
            "http" if self.settings.allow_plain_http_to_loopback && is_loopback_host(url) => {}
            "http" => {
                return Err(Failure::NotAllowed(
                    "plain http:// is allowed only to a loopback host with ALLOW_PLAIN_HTTP_TO_LOOPBACK=true".into(),
                ));
            }
            other => return Err(Failure::NotAllowed(format!("scheme {other} is not allowed (https only)"))),
        }
        Ok(matching)
    }

    /// The addresses of the URL's host, resolved once.
    async fn resolve(&self, host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, Failure> {
        match host {
            Host::Ipv4(ip) => Ok(vec![SocketAddr::new(IpAddr::V4(*ip), port)]),
            Host::Ipv6(ip) => Ok(vec![SocketAddr::new(IpAddr::V6(*ip), port)]),
            Host::Domain(name) => {
                #[cfg(test)]
                {
                    let fixed: Vec<SocketAddr> = self
                        .hosts
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, ip)| SocketAddr::new(*ip, port))
                        .collect();
                    if !fixed.is_empty() {
                        return Ok(fixed);
                    }
                }
                let addresses: Vec<SocketAddr> = tokio::net::lookup_host((*name, port))
                    .await
                    .map_err(|e| failed(format!("cannot resolve {name}: {e}"), true))?
                    .collect();
                if addresses.is_empty() {
                    return Err(failed(format!("{name} resolves to no address"), true));
                }
                Ok(addresses)
            }
        }
    }

    async fn exchange(&self, request: &Request) -> Result<Response, Failure> {
        let url = &request.url;
        let matching = self.check_url(url)?;
        let host = url.host().ok_or_else(|| Failure::NotAllowed("the URL has no host".into()))?;
        let port = url.port_or_known_default().ok_or_else(|| Failure::NotAllowed("the URL has no port".into()))?;
        let plain = url.scheme() == "http";

        let connect_limit = rotation::deadline::bound(self.settings.connect_timeout);
        let connect = async {
            let addresses = self.resolve(&host, port).await?;
            for address in &addresses {
                let ip = canonical(address.ip());
                let allowed_internal =
                    matching.iter().any(|p| p.ip.map(canonical) == Some(ip) || (p.localhost && ip.is_loopback()));
                if let Some(kind) = internal(ip)
                    && !allowed_internal
                {
                    return Err(Failure::NotAllowed(format!(
                        "{} resolves to {ip}, {kind}; only a prefix naming that address (or `localhost`) allows it",
                        host
                    )));
                }
                if plain && !ip.is_loopback() {
                    return Err(Failure::NotAllowed(format!(
                        "plain http:// is allowed only to loopback, and {host} resolves to {ip}"
                    )));
                }
            }
            let tcp = connect_pinned(&addresses).await?;
            let stream: Box<dyn Stream> = if plain {
                Box::new(tcp)
            } else {
                let name = match &host {
                    Host::Domain(name) => ServerName::try_from(name.to_string())
                        .map_err(|_| Failure::NotAllowed(format!("{name} is not a valid TLS server name")))?,
                    Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(*ip).into()),
                    Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(*ip).into()),
                };
                Box::new(self.connector.connect(name, tcp).await.map_err(|e| io_failure("TLS handshake", &e))?)
            };
            Ok::<_, Failure>(stream)
        };
        let stream = match tokio::time::timeout(connect_limit, connect).await {
            Ok(stream) => stream?,
            Err(_) => {
                return Err(failed(
                    format!("no connection (TCP and TLS) within {} ms", connect_limit.as_millis()),
                    true,
                ));
            }
        };

        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| hyper_failure(&e))?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));

        let method = http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| failed("the method is not a valid HTTP method", false))?;
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_owned(),
        };
        let mut builder = http::Request::builder().method(method).uri(target).header(http::header::HOST, authority);
        let mut has_content_type = false;
        let mut has_user_agent = false;
        for (name, value) in &request.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| failed(format!("`{}` is not a header name", crate::profile::shown(name)), false))?;
            let mut value = http::HeaderValue::from_bytes(value.expose_secret().as_bytes())
                .map_err(|_| failed(format!("the value of header `{name}` cannot be sent in HTTP"), false))?;
            value.set_sensitive(true);
            has_content_type |= name == http::header::CONTENT_TYPE;
            has_user_agent |= name == http::header::USER_AGENT;
            builder = builder.header(name, value);
        }
        if !has_user_agent {
            builder = builder.header(http::header::USER_AGENT, concat!("api-key-rotation/", env!("CARGO_PKG_VERSION")));
        }
        let body = match &request.body {
            Some(body) => {
                if !has_content_type {
                    builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                }
                Full::new(Bytes::copy_from_slice(body.expose_secret().as_bytes()))
            }
            None => Full::new(Bytes::new()),
        };
        let http_request = builder.body(body).map_err(|_| failed("the request cannot be built", false))?;
        sender.ready().await.map_err(|e| hyper_failure(&e))?;
        let response = sender.send_request(http_request).await.map_err(|e| hyper_failure(&e))?;
        let status = response.status().as_u16();
        let max = self.settings.max_response_bytes;
        let too_big = || failed(format!("answer larger than {max} bytes"), false);
        let announced = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|length| length > max as u64) {
            return Err(too_big());
        }
        let body = Limited::new(response.into_body(), max).collect().await.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_big()
            } else if let Some(e) = e.downcast_ref::<hyper::Error>() {
                hyper_failure(e)
            } else {
                failed(format!("reading the answer failed: {e}"), true)
            }
        })?;
        Ok(Response { status, body: body.to_bytes().to_vec() })
    }
}

/// Connects to the first of `addresses` that answers, `TCP_NODELAY` set.
async fn connect_pinned(addresses: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| failed(format!("cannot set TCP_NODELAY: {e}"), true))?;
                return Ok(stream);
            }
            Err(e) => last = Some(format!("cannot connect to {address}: {e}")),
        }
    }
    Err(failed(last.unwrap_or_else(|| "no address to connect to".into()), true))
}

/// A failed I/O step: TLS (not retryable) when rustls refused, else retryable.
fn io_failure(step: &str, error: &io::Error) -> Failure {
    match rotation::net::rustls_error(error) {
        Some(tls) => failed(format!("TLS failed: {tls}"), false),
        None => failed(format!("{step} failed: {}", rotation::with_causes(error)), true),
    }
}

fn hyper_failure(error: &hyper::Error) -> Failure {
    if let Some(tls) = rotation::net::rustls_error(error) {
        return failed(format!("TLS failed: {tls}"), false);
    }
    // hyper's messages name what went wrong, never the content of a message.
    let detail = rotation::with_causes(error);
    if error.is_parse() || error.is_parse_status() {
        failed(format!("the answer is not valid HTTP/1.1: {detail}"), false)
    } else {
        failed(format!("the exchange failed: {detail}"), true)
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The instance-metadata service's IPv6 address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// What kind of internal address `ip` is, when it is one a call may not reach unless named.
fn internal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(ip) => internal_v4(ip),
        IpAddr::V6(ip) => {
            if ip == METADATA_V6 {
                Some("the instance-metadata address")
            } else if ip.is_loopback() {
                Some("a loopback address")
            } else if ip.is_unspecified() {
                Some("the unspecified address")
            } else if ip.is_multicast() {
                Some("a multicast address")
            } else if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64: the IPv4 address it embeds.
                let [.., a, b] = ip.segments();
                internal_v4(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8))
            } else {
                None
            }
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip == METADATA_V4 {
        Some("the instance-metadata address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.octets()[0] == 0 {
        Some("the unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some("a multicast or broadcast address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server answers: the raw HTTP response, or `None` to stall.
    type Answer = fn(&str) -> Option<Vec<u8>>;

    struct Server {
        port: u16,
        ca_pem: String,
        /// The head and body of every request received.
        requests: Arc<Mutex<Vec<String>>>,
        connections: Arc<AtomicUsize>,
    }

    fn certificates() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca_params.clone().self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (ca_pem, certificate.der().clone(), key)
    }

    async fn server(answer: Answer) -> Server {
        let (ca_pem, certificate, key) = certificates();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![certificate], key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let request = read_request(&mut tls).await;
                    seen.lock().unwrap().push(request.clone());
                    match answer(&request) {
                        Some(response) => {
                            let _ = tls.write_all(&response).await;
                            let _ = tls.shutdown().await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        Server { port, ca_pem, requests, connections }
    }

    /// The request's head and its `Content-Length` body.
    async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> String {
        let mut data = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&data[..end + 4 + length]).to_string();
                }
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&data).to_string(),
                Ok(n) => data.extend_from_slice(&buffer[..n]),
            }
        }
    }

    fn settings(prefixes: &[String], ca_pem: Option<&str>) -> ClientSettings {
        let configs = rotation::net::TlsConfigs::new(ca_pem.map(str::as_bytes)).unwrap();
        ClientSettings {
            allowed_url_prefixes: prefixes.to_vec(),
            allow_plain_http_to_loopback: false,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            tls: configs.for_mode(TlsMode::VerifyFull).unwrap().clone(),
        }
    }

    fn request(url: &str) -> Request {
        Request {
            profile: "test-profile".into(),
            call: "test",
            method: "POST".into(),
            url: Url::parse(url).unwrap(),
            headers: vec![("X-Api-Token".into(), SecretString::from("header-secret"))],
            body: Some(SecretString::from(r#"{"key":"body-secret"}"#)),
        }
    }

    fn prefix(server: &Server) -> String {
        format!("https://127.0.0.1:{}/", server.port)
    }

    fn ok(_: &str) -> Option<Vec<u8>> {
        Some(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"answer\":\"hi\"}\n".to_vec())
    }

    #[tokio::test]
    async fn a_round_trip_sends_the_headers_and_body_and_reads_the_answer() {
        let server = server(ok).await;
        let client = HttpClient::new(settings(&[prefix(&server)], Some(&server.ca_pem))).unwrap();
        let url = format!("https://127.0.0.1:{}/v1/keys?page=2", server.port);
        let response = client.send(&request(&url)).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body(), b"{\"answer\":\"hi\"}\n");
        let received = server.requests.lock().unwrap()[0].clone();
        assert!(received.starts_with("POST /v1/keys?page=2 HTTP/1.1\r\n"), "{received}");
        let lower = received.to_ascii_lowercase();
        assert!(lower.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", server.port)), "{received}");
        assert!(lower.contains("\r\nx-api-token: header-secret\r\n"), "{received}");
        assert!(lower.contains("\r\ncontent-type: application/json\r\n"), "{received}");
        assert!(received.ends_with("\r\n\r\n{\"key\":\"body-secret\"}"), "{received}");
        assert_eq!(format!("{response:?}"), "Response { status: 200, body_bytes: 16 }");

        // `localhost` named by the prefix: loopback is allowed, and the certificate's name is checked.
        let client =
            HttpClient::new(settings(&[format!("https://localhost:{}/", server.port)], Some(&server.ca_pem))).unwrap();
        let response = client.send(&request(&format!("https://localhost:{}/x", server.port))).await.unwrap();
        assert_eq!(response.status, 200);
    }

    #[tokio::test]
    async fn a_redirect_is_returned_never_followed() {
        fn redirect(_: &str) -> Option<Vec<u8>> {
            Some(
                b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            )
        }
        let server = server(redirect).await;
        let client = HttpClient::new(settings(&[prefix(&server)], Some(&server.ca_pem))).unwrap();
        let response = client.send(&request(&format!("{}start", prefix(&server)))).await.unwrap();
        assert_eq!(response.status, 302);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        assert_eq!(server.requests.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        fn announced(_: &str) -> Option<Vec<u8>> {
            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n".to_vec();
            answer.extend(std::iter::repeat_n(b'a', 2048));
            Some(answer)
        }
        fn unannounced(_: &str) -> Option<Vec<u8>> {
            let mut answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            answer.extend(std::iter::repeat_n(b'a', 4096));
            Some(answer)
        }
        for answer in [announced as Answer, unannounced] {
            let server = server(answer).await;
            let mut settings = settings(&[prefix(&server)], Some(&server.ca_pem));
            settings.max_response_bytes = 1024;
            let client = HttpClient::new(settings).unwrap();
            let error = client.send(&request(&format!("{}big", prefix(&server)))).await.unwrap_err();
            match &error {
                Error::ProviderCall { detail, retryable: false, url, .. } => {
                    assert_eq!(detail, "answer larger than 1024 bytes");
                    assert_eq!(url, &format!("https://127.0.0.1:{}/big", server.port));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_stalled_server_is_bounded_by_the_timeout() {
        fn stall(_: &str) -> Option<Vec<u8>> {
            None
        }
        let server = server(stall).await;
        let mut settings = settings(&[prefix(&server)], Some(&server.ca_pem));
        settings.request_timeout = Duration::from_millis(500);
        let client = HttpClient::new(settings).unwrap();
        let started = Instant::now();
        let error = client.send(&request(&format!("{}slow", prefix(&server)))).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(error.is_retryable(), "{error}");
        assert!(error.to_string().contains("no complete answer within 500 ms"), "{error}");

        // A server that accepts TCP but never speaks TLS: the connect timeout.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let mut settings = self::settings(&[format!("https://127.0.0.1:{port}/")], None);
        settings.connect_timeout = Duration::from_millis(300);
        let client = HttpClient::new(settings).unwrap();
        let error = client.send(&request(&format!("https://127.0.0.1:{port}/"))).await.unwrap_err();
        assert!(error.to_string().contains("no connection (TCP and TLS) within 300 ms"), "{error}");
        assert!(error.is_retryable());
        drop(silent);
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_permanent_tls_error() {
        let server = server(ok).await;
        let client = HttpClient::new(settings(&[prefix(&server)], None)).unwrap();
        let error = client.send(&request(&format!("{}x", prefix(&server)))).await.unwrap_err();
        match &error {
            Error::ProviderCall { detail, retryable: false, call: "test", profile, .. } => {
                assert!(detail.starts_with("TLS failed: "), "{detail}");
                assert!(detail.contains("UnknownIssuer") || detail.contains("unknown issuer"), "{detail}");
                assert_eq!(profile, "test-profile");
            }
            other => panic!("{other:?}"),
        }
        assert!(server.requests.lock().unwrap().iter().all(|r| r.is_empty()), "no request was sent");
    }

    #[tokio::test]
    async fn a_closed_port_is_retryable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = HttpClient::new(settings(&[format!("https://127.0.0.1:{port}/")], None)).unwrap();
        let error = client.send(&request(&format!("https://127.0.0.1:{port}/"))).await.unwrap_err();
        assert!(matches!(error, Error::ProviderCall { retryable: true, .. }), "{error}");
    }

    fn not_allowed(error: Error) -> String {
        match error {
            Error::UrlNotAllowed { rule, url, .. } => {
                assert!(!url.contains('?'), "{url}");
                rule
            }
            other => panic!("not UrlNotAllowed: {other}"),
        }
    }

    #[tokio::test]
    async fn a_url_outside_the_allow_list_is_refused_before_any_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = HttpClient::new(settings(&[format!("https://127.0.0.1:{port}/v1/")], None)).unwrap();
        for url in [
            format!("https://127.0.0.1:{port}/v2/keys?token=query-secret"),
            format!("https://127.0.0.1:{port}/v1"),
            format!("https://127.0.0.2:{port}/v1/keys"),
        ] {
            let rule = not_allowed(client.send(&request(&url)).await.unwrap_err());
            assert!(rule.contains("none of allowed_url_prefixes"), "{rule}");
        }
        let nothing = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(nothing.is_err(), "a connection was made");
    }

    #[tokio::test]
    async fn plain_http_only_to_loopback_and_only_when_allowed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let prefixes =
            [format!("http://127.0.0.1:{port}/"), "http://10.1.2.3/".to_owned(), "ftp://127.0.0.1/".to_owned()];
        let refused = HttpClient::new(settings(&prefixes, None)).unwrap();
        let rule = not_allowed(refused.send(&request(&format!("http://127.0.0.1:{port}/x"))).await.unwrap_err());
        assert!(rule.contains("ALLOW_PLAIN_HTTP_TO_LOOPBACK"), "{rule}");
        let mut allowing = settings(&prefixes, None);
        allowing.allow_plain_http_to_loopback = true;
        let client = HttpClient::new(allowing).unwrap();
        let rule = not_allowed(client.send(&request("http://10.1.2.3/x")).await.unwrap_err());
        assert!(rule.contains("plain http:// is allowed only to a loopback host"), "{rule}");
        let rule = not_allowed(client.send(&request("ftp://127.0.0.1/x")).await.unwrap_err());
        assert!(rule.contains("https only"), "{rule}");

        // Plain HTTP to loopback, allowed: a real exchange.
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let request = read_request(&mut tcp).await;
            assert!(request.starts_with("POST /x HTTP/1.1"));
            tcp.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await.unwrap();
        });
        assert_eq!(client.send(&request(&format!("http://127.0.0.1:{port}/x"))).await.unwrap().status, 204);
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_unless_the_prefix_names_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let prefixes = vec![
            format!("https://service.test:{port}/"),
            "https://metadata.test/".to_owned(),
            "https://mapped.test/".to_owned(),
            "https://mixed.test/".to_owned(),
            "https://[fd00:ec2::254]/".to_owned(),
        ];
        let mut client = HttpClient::new(settings(&prefixes, None)).unwrap();
        client.hosts = vec![
            ("service.test".into(), IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ("metadata.test".into(), IpAddr::V4(METADATA_V4)),
            ("mapped.test".into(), "::ffff:127.0.0.1".parse().unwrap()),
            ("mixed.test".into(), "93.184.216.34".parse().unwrap()),
            ("mixed.test".into(), "fe80::1".parse().unwrap()),
        ];
        let cases = [
            (format!("https://service.test:{port}/x"), "resolves to 127.0.0.1, a loopback address"),
            ("https://metadata.test/latest/meta-data".to_owned(), "the instance-metadata address"),
            ("https://mapped.test/".to_owned(), "a loopback address"),
            ("https://mixed.test/".to_owned(), "a link-local address"),
        ];
        for (url, expected) in cases {
            let rule = not_allowed(client.send(&request(&url)).await.unwrap_err());
            assert!(rule.contains(expected), "{url}: {rule}");
        }
        // Named by its IP literal: allowed (and then unreachable here, a call failure, not a refusal).
        let named = client.send(&request("https://[fd00:ec2::254]/x")).await.unwrap_err();
        assert!(matches!(named, Error::ProviderCall { .. }), "{named}");
        let nothing = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(nothing.is_err(), "a connection was made");
    }

    #[test]
    fn internal_address_kinds() {
        let kind = |ip: &str| internal(ip.parse().unwrap());
        assert_eq!(kind("169.254.169.254"), Some("the instance-metadata address"));
        assert_eq!(kind("169.254.170.2"), Some("a link-local address"));
        assert_eq!(kind("127.0.0.53"), Some("a loopback address"));
        assert_eq!(kind("0.0.0.0"), Some("the unspecified address"));
        assert_eq!(kind("224.0.0.1"), Some("a multicast or broadcast address"));
        assert_eq!(kind("::1"), Some("a loopback address"));
        assert_eq!(kind("::"), Some("the unspecified address"));
        assert_eq!(kind("fe80::1"), Some("a link-local address"));
        assert_eq!(kind("ff02::1"), Some("a multicast address"));
        assert_eq!(kind("fd00:ec2::254"), Some("the instance-metadata address"));
        assert_eq!(kind("::ffff:169.254.169.254"), Some("the instance-metadata address"));
        assert_eq!(kind("64:ff9b::a9fe:a9fe"), Some("the instance-metadata address"));
        assert_eq!(kind("10.0.0.1"), None);
        assert_eq!(kind("93.184.216.34"), None);
        assert_eq!(kind("2600:1f18::1"), None);
    }

    #[test]
    fn debug_shows_no_header_or_body() {
        let request = request("https://api.example.com/v1/keys?token=query-secret");
        let shown = format!("{request:?}");
        assert!(
            shown.contains("POST")
                && shown.contains("test-profile")
                && shown.contains("https://api.example.com:443/v1/keys")
        );
        for secret in ["header-secret", "body-secret", "query-secret", "X-Api-Token"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let response = Response { status: 200, body: b"response-secret".to_vec() };
        assert!(!format!("{response:?}").contains("response-secret"));
    }

    #[test]
    fn settings_from_the_environment() {
        let lookup = |name: &str| match name {
            "CONNECT_TIMEOUT_SECONDS" => Some("2.5".to_owned()),
            "ALLOW_PLAIN_HTTP_TO_LOOPBACK" => Some("true".to_owned()),
            _ => None,
        };
        let settings = ClientSettings::from_lookup(&lookup, vec!["https://a.example.com/".into()]).unwrap();
        assert_eq!(settings.connect_timeout, Duration::from_millis(2500));
        assert_eq!(settings.request_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_response_bytes, 1 << 20);
        assert!(settings.allow_plain_http_to_loopback);
        let bad = |name: &'static str, value: &'static str| {
            ClientSettings::from_lookup(&move |n: &str| (n == name).then(|| value.to_owned()), vec![]).unwrap_err()
        };
        assert!(matches!(
            bad("REQUEST_TIMEOUT_SECONDS", "0"),
            Error::Config { variable: "REQUEST_TIMEOUT_SECONDS", .. }
        ));
        assert!(matches!(
            bad("CA_BUNDLE_PATH", "/nonexistent/ca.pem"),
            Error::Config { variable: "CA_BUNDLE_PATH", .. }
        ));
    }
}
