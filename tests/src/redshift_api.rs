//! A stand-in for the two Redshift API calls of the `admin-api` strategy, served to the
//! function on [`TestEnv::redshift_api_port`] (its `AWS_ENDPOINT_URL_REDSHIFT` and
//! `AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS`):
//!
//! - `ModifyCluster` (Redshift's query protocol: a form-encoded POST, an XML answer),
//! - `UpdateNamespace` (Redshift Serverless's JSON 1.1 protocol, `X-Amz-Target`).
//!
//! Signed requests are accepted without checking the signature. Like the real services, the
//! answer comes at once and the change is applied later: after [`APPLY_DELAY`], the new
//! password is set on the PostgreSQL stand-in, in md5 form, for the user registered for that
//! cluster or namespace. LocalStack applies neither call to any database, and its community
//! edition has no Redshift Serverless API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{TestEnv, quote_ident};

/// How long after a call its change takes effect.
pub const APPLY_DELAY: Duration = Duration::from_secs(3);

/// A call the endpoint received, as the tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `ModifyCluster` or `UpdateNamespace`.
    pub operation: String,
    /// The cluster identifier or namespace name.
    pub resource: String,
    /// `adminUsername` of UpdateNamespace.
    pub username: Option<String>,
    /// Whether the request carried an AWS signature (`Authorization: AWS4-HMAC-SHA256 ...`).
    pub signed: bool,
}

#[derive(Default)]
struct State {
    /// Cluster identifier -> the stand-in's role that is its admin user.
    clusters: HashMap<String, String>,
    /// Namespace name -> its admin user.
    namespaces: HashMap<String, String>,
    calls: Vec<Call>,
}

/// The endpoint of this test process, started on first use.
pub struct RedshiftApi {
    state: Arc<Mutex<State>>,
}

impl RedshiftApi {
    /// The endpoint, listening on `env.redshift_api_port` from a thread of its own (each test
    /// has its own runtime; the endpoint outlives them all).
    pub fn get(env: &TestEnv) -> &'static RedshiftApi {
        static API: OnceLock<RedshiftApi> = OnceLock::new();
        API.get_or_init(|| {
            let state = Arc::new(Mutex::new(State::default()));
            let listener = std::net::TcpListener::bind(("127.0.0.1", env.redshift_api_port))
                .unwrap_or_else(|e| panic!("bind the Redshift API stand-in to port {}: {e}", env.redshift_api_port));
            listener.set_nonblocking(true).unwrap();
            let (served, env) = (state.clone(), env.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
                // The listener joins this runtime's reactor, so it is converted inside it.
                runtime.unwrap().block_on(async move {
                    serve(TcpListener::from_std(listener).expect("a tokio listener"), served, env).await
                });
            });
            RedshiftApi { state }
        })
    }

    /// Makes `user` the admin user of cluster `identifier`.
    pub fn add_cluster(&self, identifier: &str, user: &str) {
        self.state.lock().unwrap().clusters.insert(identifier.to_owned(), user.to_owned());
    }

    /// Makes `user` the admin user of namespace `name`.
    pub fn add_namespace(&self, name: &str, user: &str) {
        self.state.lock().unwrap().namespaces.insert(name.to_owned(), user.to_owned());
    }

    /// The calls received for `resource`, in order.
    pub fn calls_for(&self, resource: &str) -> Vec<Call> {
        self.state.lock().unwrap().calls.iter().filter(|c| c.resource == resource).cloned().collect()
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, env: TestEnv) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (state, env) = (state.clone(), env.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, state, env).await {
                eprintln!("Redshift API stand-in: {e}");
            }
        });
    }
}

struct Request {
    headers: HashMap<String, String>,
    body: String,
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the request ended"));
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[head_end..]).into_owned();
    Ok(Request { headers, body })
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Error" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn handle(mut stream: TcpStream, state: Arc<Mutex<State>>, env: TestEnv) -> std::io::Result<()> {
    let request = read_request(&mut stream).await?;
    let signed = request.headers.get("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"));
    match request.headers.get("x-amz-target").map(String::as_str) {
        Some("RedshiftServerless.UpdateNamespace") => {
            let body: serde_json::Value = serde_json::from_str(&request.body).unwrap_or_default();
            let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
            let (namespace, username, password) =
                (field("namespaceName"), field("adminUsername"), field("adminUserPassword"));
            let admin = {
                let mut state = state.lock().unwrap();
                state.calls.push(Call {
                    operation: "UpdateNamespace".into(),
                    resource: namespace.clone(),
                    username: Some(username.clone()),
                    signed,
                });
                state.namespaces.get(&namespace).cloned()
            };
            let json_error =
                |kind: &str, message: String| serde_json::json!({"__type": kind, "message": message}).to_string();
            let content_type = "application/x-amz-json-1.1";
            match admin {
                None => {
                    let body = json_error("ResourceNotFoundException", format!("namespace {namespace} not found"));
                    respond(&mut stream, 400, content_type, &body).await
                }
                Some(admin) if admin != username => {
                    let body = json_error("ValidationException", format!("adminUsername {username} is not the admin"));
                    respond(&mut stream, 400, content_type, &body).await
                }
                Some(admin) => {
                    apply_later(env, admin.clone(), password);
                    let body = serde_json::json!({"namespace": {
                        "namespaceName": namespace,
                        "namespaceId": "11111111-2222-3333-4444-555555555555",
                        "namespaceArn": format!("arn:aws:redshift-serverless:us-east-1:000000000000:namespace/{namespace}"),
                        "adminUsername": admin,
                        "status": "MODIFYING",
                    }});
                    respond(&mut stream, 200, content_type, &body.to_string()).await
                }
            }
        }
        Some(other) => {
            let body = serde_json::json!({"__type": "UnknownOperationException", "message": other}).to_string();
            respond(&mut stream, 400, "application/x-amz-json-1.1", &body).await
        }
        None => {
            let form = parse_form(&request.body);
            let value = |name: &str| form.get(name).cloned().unwrap_or_default();
            let action = value("Action");
            if action != "ModifyCluster" {
                let body = xml_error("InvalidAction", &format!("the stand-in does not serve {action}"));
                return respond(&mut stream, 400, "text/xml", &body).await;
            }
            let cluster = value("ClusterIdentifier");
            let admin = {
                let mut state = state.lock().unwrap();
                state.calls.push(Call {
                    operation: "ModifyCluster".into(),
                    resource: cluster.clone(),
                    username: None,
                    signed,
                });
                state.clusters.get(&cluster).cloned()
            };
            match admin {
                None => {
                    let body = xml_error("ClusterNotFound", &format!("Cluster {cluster} not found."));
                    respond(&mut stream, 404, "text/xml", &body).await
                }
                Some(admin) => {
                    if let Some(password) = form.get("MasterUserPassword") {
                        apply_later(env, admin, password.clone());
                    }
                    let body = format!(
                        "<ModifyClusterResponse xmlns=\"http://redshift.amazonaws.com/doc/2012-12-01/\">\
                         <ModifyClusterResult><Cluster><ClusterIdentifier>{cluster}</ClusterIdentifier>\
                         <ClusterStatus>available</ClusterStatus><PendingModifiedValues>\
                         <MasterUserPassword>****</MasterUserPassword></PendingModifiedValues></Cluster>\
                         </ModifyClusterResult><ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000\
                         </RequestId></ResponseMetadata></ModifyClusterResponse>",
                        cluster = xml_escape(&cluster)
                    );
                    respond(&mut stream, 200, "text/xml", &body).await
                }
            }
        }
    }
}

/// Sets `user`'s password on the stand-in after [`APPLY_DELAY`], in md5 form.
fn apply_later(env: TestEnv, user: String, password: String) {
    tokio::spawn(async move {
        tokio::time::sleep(APPLY_DELAY).await;
        let md5 = postgres_protocol::password::md5(password.as_bytes(), &user);
        env.admin_sql(&format!("ALTER ROLE {} PASSWORD '{md5}'", quote_ident(&user))).await;
    });
}

fn xml_error(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://redshift.amazonaws.com/doc/2012-12-01/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{}</Message></Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId>\
         </ErrorResponse>",
        xml_escape(message)
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An `application/x-www-form-urlencoded` body.
fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (percent_decode(name), percent_decode(value)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_are_decoded() {
        let form = parse_form("Action=ModifyCluster&MasterUserPassword=a%2Bb%26c%3D%25+d&ClusterIdentifier=c-1");
        assert_eq!(form["Action"], "ModifyCluster");
        assert_eq!(form["MasterUserPassword"], "a+b&c=% d");
        assert_eq!(form["ClusterIdentifier"], "c-1");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
