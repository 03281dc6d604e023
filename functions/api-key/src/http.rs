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
        let connect_timeout = seconds(lookup, "CONNECT_TIMEOUT_SECONDS", 5)?;
        let request_timeout = seconds(lookup, "REQUEST_TIMEOUT_SECONDS", 10)?;
        let ca_bundle = match lookup("CA_BUNDLE_PATH").filter(|p| !p.trim().is_empty()) {
            None => None,
            Some(path) => Some(std::fs::read(&path).map_err(|e| Error::Config {
                variable: "CA_BUNDLE_PATH",
                problem: format!("names {path}, which cannot be read: {e}"),
            })?),
        };
        let configs = rotation::net::TlsConfigs::new(ca_bundle.as_deref())?;
        let tls = configs
            .for_mode(TlsMode::VerifyFull)
            .cloned()
            .ok_or_else(|| Error::Config { variable: "(TLS)", problem: "has no verify-full configuration".into() })?;
        Ok(ClientSettings {
            allowed_url_prefixes,
            allow_plain_http_to_loopback: plain_http_to_loopback(lookup)?,
            connect_timeout,
            request_timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            tls,
        })
    }
}

/// A duration in seconds from `variable` (fractions allowed, more than 0, at most 300).
fn seconds(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str, default: u64) -> Result<Duration, Error> {
    match lookup(variable).filter(|text| !text.trim().is_empty()) {
        None => Ok(Duration::from_secs(default)),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 300.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| Error::Config {
                variable,
                problem: "must be a number of seconds greater than 0 and at most 300".into(),
            }),
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
