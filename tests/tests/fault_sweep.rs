//! A fault sweep (issue 11): the PostgreSQL function rotates a single user through a proxy that
//! cuts every connection right after it forwarded the k-th write of the client, for k = 1, 2, ...
//! until a rotation needs fewer writes. After each fault the server's password must be the
//! password of a stored version (current, pending or previous), and once the proxy is restored,
//! the steps run again in a fresh process complete the rotation.
//!
//! The same sweep runs with the proxy in front of MariaDB, and in front of LocalStack (the
//! function process's `AWS_ENDPOINT_URL` points at the proxy; PostgreSQL, single user): there the
//! stored versions are read directly from LocalStack, and at most one version may be staged
//! `AWSPENDING`. Both hold every failure to `Retryable.*`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use e2e::runtime_api::FunctionProcess;
use e2e::scenarios::{Db, Fixture};
use e2e::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// No rotation takes this many writes; the sweep stops before.
const MAX_WRITES: usize = 200;

/// A TCP proxy that counts the client's writes it forwards and, once it forwarded the
/// `cut_after`-th, closes its port and every connection through it.
struct CuttingProxy {
    port: u16,
    upstream: SocketAddr,
    writes: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl CuttingProxy {
    async fn start(upstream: SocketAddr, cut_after: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let writes = Arc::new(AtomicUsize::new(0));
        let task = Some(tokio::spawn(serve(listener, upstream, writes.clone(), cut_after)));
        CuttingProxy { port, upstream, writes, task }
    }

    /// Whether the proxy cut (its accept loop ended).
    fn cut(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Listens on the same port again, never cutting.
    async fn restore(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind proxy port");
        self.task = Some(tokio::spawn(serve(listener, self.upstream, self.writes.clone(), usize::MAX)));
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, writes: Arc<AtomicUsize>, cut_after: usize) {
    let cut = Arc::new(Notify::new());
    // Connections live in this set: returning drops the listener and every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cut.notified() => return,
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                connections.spawn(pump(inbound, upstream, writes.clone(), cut_after, cut.clone()));
            }
        }
    }
}

async fn pump(inbound: TcpStream, upstream: SocketAddr, writes: Arc<AtomicUsize>, cut_after: usize, cut: Arc<Notify>) {
    let Ok(outbound) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let up = async {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await.unwrap_or(0);
            if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                let _ = server_write.shutdown().await;
                return;
            }
            if writes.fetch_add(1, Ordering::SeqCst) + 1 == cut_after {
                cut.notify_one();
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    let _ = tokio::join!(up, down);
}

/// The password of the version with `label`, if it has a value.
async fn stored_password(f: &Fixture, label: &str) -> Option<String> {
    let out = f.client.get_secret_value().secret_id(&f.secret).version_stage(label).send().await.ok()?;
    let value: serde_json::Value = serde_json::from_str(out.secret_string()?).ok()?;
    value["password"].as_str().map(str::to_owned)
}

/// The labels of the stored versions whose password logs in now.
async fn labels_that_log_in(f: &Fixture) -> Vec<&'static str> {
    let mut found = Vec::new();
    for label in ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"] {
        if let Some(password) = stored_password(f, label).await
            && f.logs_in(&password).await
        {
            found.push(label);
        }
    }
    found
}

/// What one cut point did: the step that failed and its (errorType, errorMessage), and whether
/// the proxy cut.
struct CutOutcome {
    failed: Option<(&'static str, String, String)>,
    cut: bool,
}

/// What the cutting proxy stands in front of, and which function rotates.
#[derive(Debug, Clone, Copy)]
enum Behind {
    /// PostgreSQL; the function reaches LocalStack directly.
    Postgres,
    /// MariaDB; the function reaches LocalStack directly.
    Mariadb,
    /// LocalStack (the function process's `AWS_ENDPOINT_URL`); the PostgreSQL function reaches
    /// the database directly.
    LocalStack,
}

impl Behind {
    fn db(self) -> Db {
        match self {
            Behind::Mariadb => Db::Mysql,
            Behind::Postgres | Behind::LocalStack => Db::Postgres,
        }
    }

    async fn upstream(self, env: &TestEnv) -> SocketAddr {
        match self {
            Behind::Postgres => ([127, 0, 0, 1], env.pg_port).into(),
            Behind::Mariadb => ([127, 0, 0, 1], env.mysql_port).into(),
            Behind::LocalStack => {
                let authority = env.aws_endpoint.trim_start_matches("http://").trim_end_matches('/');
                let mut addrs: Vec<SocketAddr> =
                    tokio::net::lookup_host(authority).await.expect("resolve LocalStack's endpoint").collect();
                addrs.sort_by_key(SocketAddr::is_ipv6);
                addrs.first().copied().expect("LocalStack's endpoint has an address")
            }
        }
    }
}

/// The versions staged `AWSPENDING`, read directly from LocalStack.
fn pending_versions(stages: &BTreeMap<String, Vec<String>>) -> usize {
    stages.values().filter(|labels| labels.iter().any(|l| l == "AWSPENDING")).count()
}

/// A single-user PostgreSQL secret behind a proxy that cuts after the client's `k`-th write.
async fn cut_after_write(env: &TestEnv, k: usize) -> CutOutcome {
    cut_after_write_behind(env, Behind::Postgres, k).await
}

/// A single-user secret with a proxy in front of `behind` that cuts after the client's `k`-th
/// write: runs the four steps in a fresh process until one fails, checks that a stored version's
/// password (read directly from LocalStack) is the server's and that at most one version is
/// staged `AWSPENDING`, restores the proxy, and completes the rotation in another fresh process.
async fn cut_after_write_behind(env: &TestEnv, behind: Behind, k: usize) -> CutOutcome {
    let db = behind.db();
    let mut proxy = CuttingProxy::start(behind.upstream(env).await, k).await;
    let extra = match behind {
        Behind::Postgres | Behind::Mariadb => json!({ "port": proxy.port }),
        Behind::LocalStack => json!({}),
    };
    let f = Fixture::new(db, extra).await;
    // The function processes' environment: LocalStack through the proxy when it is behind it.
    let mut process_env = f.env.clone();
    if let Behind::LocalStack = behind {
        process_env.aws_endpoint = format!("http://127.0.0.1:{}", proxy.port);
    }
    let token = f.start_rotation().await;
    let process = FunctionProcess::start(&process_env, db.function()).await;
    let mut failed = None;
    for step in STEPS {
        if let Err((error_type, message)) = process.step(step, &f.secret, &token).await {
            failed = Some((step, error_type, message));
            break;
        }
    }
    drop(process);
    let cut = proxy.cut();
    match &failed {
        Some((step, error_type, message)) => {
            eprintln!("{behind:?}: cut after write {k}: {step} failed: {error_type}: {message}")
        }
        None => eprintln!("{behind:?}: cut after write {k}: the rotation completed (cut: {cut})"),
    }
    let logging_in = labels_that_log_in(&f).await;
    eprintln!("{behind:?}: cut after write {k}: the server's password is that of {logging_in:?}");
    assert!(
        !logging_in.is_empty(),
        "{behind:?}: cut after write {k}: no stored version's password logs in ({failed:?})"
    );
    let stages = f.stages().await;
    assert!(pending_versions(&stages) <= 1, "{behind:?}: cut after write {k}: {stages:?}");

    proxy.restore().await;
    let process = FunctionProcess::start(&process_env, db.function()).await;
    for step in STEPS {
        process
            .step(step, &f.secret, &token)
            .await
            .unwrap_or_else(|e| panic!("{behind:?}: cut after write {k}: {step} retried after the restore: {e:?}"));
    }
    let stages = f.stages().await;
    assert_eq!(stages[&token], ["AWSCURRENT"], "{behind:?}: cut after write {k}: {stages:?}");
    assert_eq!(pending_versions(&stages), 0, "{behind:?}: cut after write {k}: {stages:?}");
    let current = f.password_of(None, "AWSCURRENT").await;
    assert!(f.logs_in(&current).await, "{behind:?}: cut after write {k}: the new password logs in");
    assert!(!f.logs_in(&f.password).await, "{behind:?}: cut after write {k}: the old password is refused");
    CutOutcome { failed, cut }
}

/// Sweeps k = 1, 2, ... (at most `max_k`) until a rotation completes without a cut; prints the
/// number of cut points and the failures by step and errorType, and returns the failures as
/// (k, step, errorType, errorMessage).
async fn sweep(behind: Behind, max_k: usize) -> Vec<(usize, &'static str, String, String)> {
    let env = TestEnv::from_env();
    let started = std::time::Instant::now();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut swept = 0;
    let mut completed = false;
    for k in 1..=max_k {
        let outcome = cut_after_write_behind(&env, behind, k).await;
        swept = k;
        if let Some((step, error_type, message)) = outcome.failed {
            *counts.entry(format!("{step}: {error_type}")).or_default() += 1;
            failures.push((k, step, error_type, message));
        } else if !outcome.cut {
            completed = true;
            break;
        }
    }
    eprintln!(
        "fault sweep {behind:?}: {swept} cut points{} in {:?}; failures by step and errorType: {counts:?}",
        if completed { "" } else { " (capped: the rotation needs more writes)" },
        started.elapsed()
    );
    failures
}

fn assert_all_retryable(behind: Behind, failures: &[(usize, &'static str, String, String)]) {
    let other: Vec<_> = failures.iter().filter(|(_, _, error_type, _)| !error_type.starts_with("Retryable.")).collect();
    assert!(other.is_empty(), "{behind:?}: failures that are not Retryable.*: {other:?}");
}

/// The sweep: any errorType is allowed here (the next test holds the functions to `Retryable.`);
/// what must hold is the invariant after each cut and the completed rotation after the restore.
#[tokio::test]
async fn every_cut_leaves_a_stored_password_and_the_retry_completes() {
    let env = TestEnv::from_env();
    // "step: errorType" -> count.
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut swept = 0;
    for k in 1..=MAX_WRITES {
        let outcome = cut_after_write(&env, k).await;
        if let Some((step, error_type, _)) = &outcome.failed {
            *failures.entry(format!("{step}: {error_type}")).or_default() += 1;
        }
        swept = k;
        if outcome.failed.is_none() && !outcome.cut {
            break;
        }
    }
    assert!(swept < MAX_WRITES, "a rotation took {MAX_WRITES} writes or more");
    eprintln!("fault sweep: {swept} cut points; failures by step and errorType: {failures:?}");
}

/// The client's second write is its TLS ClientHello (the first is PostgreSQL's SSLRequest): a
/// connection lost in the middle of the handshake is a network fault, so a retry may succeed.
#[tokio::test]
async fn a_connection_cut_during_the_tls_handshake_fails_retryably() {
    let env = TestEnv::from_env();
    let outcome = cut_after_write(&env, 2).await;
    let (step, error_type, message) = outcome.failed.expect("the cut during the handshake fails a step");
    assert!(error_type.starts_with("Retryable."), "{step} failed with {error_type}: {message}");
}

/// Cut points per sweep at most, to keep a sweep near a minute.
const MAX_CUTS: usize = 60;

/// The sweep with the proxy in front of MariaDB: every failure is `Retryable.*`.
#[tokio::test]
async fn mariadb_every_cut_leaves_a_stored_password_and_fails_retryably() {
    let failures = sweep(Behind::Mariadb, MAX_CUTS).await;
    assert_all_retryable(Behind::Mariadb, &failures);
}

/// The sweep with the proxy in front of LocalStack (PostgreSQL, single user): every failure is
/// `Retryable.*`.
#[tokio::test]
async fn localstack_every_cut_leaves_a_stored_password_and_fails_retryably() {
    let failures = sweep(Behind::LocalStack, MAX_CUTS).await;
    assert_all_retryable(Behind::LocalStack, &failures);
}

/// A TCP proxy that numbers the client's writes across its connections and forwards the first
/// `limit` of them: the `limit`-th is announced (`reached`), later ones are read and dropped, so
/// a process killed then has sent nothing more; a connection whose client closes is closed
/// upstream, as the kernel of a killed process does.
struct FreezingProxy {
    port: u16,
    limit: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
    reached: Arc<Notify>,
    task: JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(upstream: SocketAddr, limit: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let limit = Arc::new(AtomicUsize::new(limit));
        let writes = Arc::new(AtomicUsize::new(0));
        let reached = Arc::new(Notify::new());
        let (l, w, r) = (limit.clone(), writes.clone(), reached.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                connections.spawn(freezing_pump(inbound, upstream, w.clone(), l.clone(), r.clone()));
            }
        });
        FreezingProxy { port, limit, writes, reached, task }
    }

    /// Whether the `limit`-th write went through.
    fn reached(&self) -> bool {
        self.writes.load(Ordering::SeqCst) >= self.limit.load(Ordering::SeqCst)
    }

    /// Forwards every write from now on.
    fn restore(&self) {
        self.limit.store(usize::MAX, Ordering::SeqCst);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn freezing_pump(
    inbound: TcpStream,
    upstream: SocketAddr,
    writes: Arc<AtomicUsize>,
    limit: Arc<AtomicUsize>,
    reached: Arc<Notify>,
) {
    let Ok(outbound) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let up = async {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                let _ = server_write.shutdown().await;
                return;
            }
            let number = writes.fetch_add(1, Ordering::SeqCst) + 1;
            let limit = limit.load(Ordering::SeqCst);
            if number > limit {
                continue;
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                let _ = server_write.shutdown().await;
                return;
            }
            if number == limit {
                reached.notify_one();
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    let _ = tokio::join!(up, down);
}

/// What one kill point did: the failures answered before the kill (step, errorType,
/// errorMessage), and whether the kill struck.
struct KillOutcome {
    failed: Option<(&'static str, String, String)>,
    killed: bool,
}

/// A single-user PostgreSQL secret behind a proxy that lets the client's `k`-th write through
/// and SIGKILLs the function process right after; the invocation in flight is abandoned. Checks
/// the invariant, then a fresh process completes the rotation.
async fn kill_after_write(env: &TestEnv, k: usize) -> KillOutcome {
    let proxy = FreezingProxy::start(([127, 0, 0, 1], env.pg_port).into(), k).await;
    let f = Fixture::new(Db::Postgres, json!({ "port": proxy.port })).await;
    let token = f.start_rotation().await;
    let mut process = FunctionProcess::start(&f.env, Db::Postgres.function()).await;
    let steps = async {
        for step in STEPS {
            if let Err((error_type, message)) = process.step(step, &f.secret, &token).await {
                return Some((step, error_type, message));
            }
        }
        None
    };
    let (failed, killed) = tokio::select! {
        biased;
        _ = proxy.reached.notified() => (None, true),
        failed = steps => (failed, proxy.reached()),
    };
    if killed {
        process.kill();
    }
    drop(process);
    match &failed {
        Some((step, error_type, message)) => eprintln!("kill after write {k}: {step} failed: {error_type}: {message}"),
        None if killed => eprintln!("kill after write {k}: killed"),
        None => eprintln!("kill after write {k}: the rotation completed before the kill"),
    }
    // Let the server finish what it received before the kill.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logging_in = labels_that_log_in(&f).await;
    eprintln!("kill after write {k}: the server's password is that of {logging_in:?}");
    assert!(!logging_in.is_empty(), "kill after write {k}: no stored version's password logs in ({failed:?})");
    let stages = f.stages().await;
    assert!(pending_versions(&stages) <= 1, "kill after write {k}: {stages:?}");

    proxy.restore();
    let process = FunctionProcess::start(&f.env, Db::Postgres.function()).await;
    for step in STEPS {
        process
            .step(step, &f.secret, &token)
            .await
            .unwrap_or_else(|e| panic!("kill after write {k}: {step} in a fresh process: {e:?}"));
    }
    let stages = f.stages().await;
    assert_eq!(stages[&token], ["AWSCURRENT"], "kill after write {k}: {stages:?}");
    assert_eq!(pending_versions(&stages), 0, "kill after write {k}: {stages:?}");
    let current = f.password_of(None, "AWSCURRENT").await;
    assert!(f.logs_in(&current).await, "kill after write {k}: the new password logs in");
    assert!(!f.logs_in(&f.password).await, "kill after write {k}: the old password is refused");
    KillOutcome { failed, killed }
}

/// Kill points at most.
const MAX_KILLS: usize = 40;

/// The kill sweep (PostgreSQL, single user): the process is SIGKILLed right after the client's
/// k-th write, for k = 1, 2, ... until a rotation completes before the kill; after each kill a
/// stored version's password is the server's, at most one version is `AWSPENDING`, and a fresh
/// process completes the rotation. Answered failures are `Retryable.*`.
#[tokio::test]
async fn postgres_every_kill_leaves_a_stored_password_and_a_fresh_process_completes() {
    let env = TestEnv::from_env();
    let started = std::time::Instant::now();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut swept, mut kills, mut completed) = (0, 0, false);
    for k in 1..=MAX_KILLS {
        let outcome = kill_after_write(&env, k).await;
        swept = k;
        kills += usize::from(outcome.killed);
        if let Some((step, error_type, message)) = outcome.failed {
            *counts.entry(format!("{step}: {error_type}")).or_default() += 1;
            failures.push((k, step, error_type, message));
        } else if !outcome.killed {
            completed = true;
            break;
        }
    }
    eprintln!(
        "kill sweep Postgres: {swept} kill points, {kills} kills{} in {:?}; failures by step and errorType: {counts:?}",
        if completed { "" } else { " (capped: the rotation needs more writes)" },
        started.elapsed()
    );
    let other: Vec<_> = failures.iter().filter(|(_, _, error_type, _)| !error_type.starts_with("Retryable.")).collect();
    assert!(other.is_empty(), "kill sweep: failures that are not Retryable.*: {other:?}");
}

/// The (username, password) of the version with `label`, if it has them.
async fn stored_credentials(f: &Fixture, label: &str) -> Option<(String, String)> {
    let out = f.client.get_secret_value().secret_id(&f.secret).version_stage(label).send().await.ok()?;
    let value: serde_json::Value = serde_json::from_str(out.secret_string()?).ok()?;
    Some((value["username"].as_str()?.to_owned(), value["password"].as_str()?.to_owned()))
}

/// An alternating-users PostgreSQL secret with a master, behind a proxy that cuts after the
/// client's `k`-th write: runs the steps until one fails, checks that each existing user's
/// server password is that of a stored version for that user and at most one version is
/// `AWSPENDING`, restores the proxy and completes the rotation in a fresh process.
async fn cut_alternating_after_write(env: &TestEnv, k: usize) -> CutOutcome {
    let mut proxy = CuttingProxy::start(([127, 0, 0, 1], env.pg_port).into(), k).await;
    let main = unique("alt");
    let clone = format!("{main}_clone");
    let (master_arn, master) = env.create_pg_master().await;
    let f = Fixture::with_master(Db::Postgres, &main, &master_arn, json!({ "port": proxy.port })).await;
    env.let_pg_master_administer(&master, &main).await;
    let token = f.start_rotation().await;
    let process = FunctionProcess::start(&f.env, Db::Postgres.function()).await;
    let mut failed = None;
    for step in STEPS {
        if let Err((error_type, message)) = process.step(step, &f.secret, &token).await {
            failed = Some((step, error_type, message));
            break;
        }
    }
    drop(process);
    let cut = proxy.cut();
    match &failed {
        Some((step, error_type, message)) => {
            eprintln!("alternating: cut after write {k}: {step} failed: {error_type}: {message}")
        }
        None => eprintln!("alternating: cut after write {k}: the rotation completed (cut: {cut})"),
    }
    let mut stored = Vec::new();
    for label in ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"] {
        if let Some(credentials) = stored_credentials(&f, label).await {
            stored.push((label, credentials));
        }
    }
    for user in [&main, &clone] {
        if !env.role_exists(user).await {
            continue;
        }
        let mut logging_in = Vec::new();
        for (label, (name, password)) in &stored {
            if name == user && env.pg_logs_in(user, password).await {
                logging_in.push(*label);
            }
        }
        eprintln!("alternating: cut after write {k}: {user}'s password is that of {logging_in:?}");
        assert!(
            !logging_in.is_empty(),
            "alternating: cut after write {k}: no stored version's password for {user} logs in ({failed:?})"
        );
    }
    let (current_user, current_password) = f.current_credentials().await;
    let current_logs_in = env.pg_logs_in(&current_user, &current_password).await;
    if !current_logs_in {
        eprintln!(
            "alternating: cut after write {k}: AWSCURRENT ({current_user}) does not log in; the rotation must complete"
        );
    }
    let stages = f.stages().await;
    assert!(pending_versions(&stages) <= 1, "alternating: cut after write {k}: {stages:?}");

    proxy.restore().await;
    let process = FunctionProcess::start(&f.env, Db::Postgres.function()).await;
    for step in STEPS {
        process
            .step(step, &f.secret, &token)
            .await
            .unwrap_or_else(|e| panic!("alternating: cut after write {k}: {step} retried after the restore: {e:?}"));
    }
    let stages = f.stages().await;
    assert_eq!(stages[&token], ["AWSCURRENT"], "alternating: cut after write {k}: {stages:?}");
    assert_eq!(pending_versions(&stages), 0, "alternating: cut after write {k}: {stages:?}");
    let (user, password) = f.current_credentials().await;
    assert_eq!(user, clone, "alternating: cut after write {k}: the clone is current");
    assert!(env.pg_logs_in(&user, &password).await, "alternating: cut after write {k}: the clone logs in");
    assert!(env.pg_logs_in(&main, &f.password).await, "alternating: cut after write {k}: the main user still logs in");
    CutOutcome { failed, cut }
}

/// The cut sweep for PostgreSQL alternating users with a master: every failure is `Retryable.*`.
#[tokio::test]
async fn postgres_alternating_every_cut_leaves_stored_passwords_and_fails_retryably() {
    let env = TestEnv::from_env();
    let started = std::time::Instant::now();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut swept, mut completed) = (0, false);
    for k in 1..=MAX_CUTS {
        let outcome = cut_alternating_after_write(&env, k).await;
        swept = k;
        if let Some((step, error_type, message)) = outcome.failed {
            *counts.entry(format!("{step}: {error_type}")).or_default() += 1;
            failures.push((k, step, error_type, message));
        } else if !outcome.cut {
            completed = true;
            break;
        }
    }
    eprintln!(
        "fault sweep Postgres alternating: {swept} cut points{} in {:?}; failures by step and errorType: {counts:?}",
        if completed { "" } else { " (capped: the rotation needs more writes)" },
        started.elapsed()
    );
    let other: Vec<_> = failures.iter().filter(|(_, _, error_type, _)| !error_type.starts_with("Retryable.")).collect();
    assert!(other.is_empty(), "alternating: failures that are not Retryable.*: {other:?}");
}
