//! In-memory doubles for unit tests.
//!
//! [`MemoryStore`] behaves as AWS Secrets Manager does (not as LocalStack does) for the calls
//! the steps make; [`FakeTarget`] is a database with one password per user. Both share their
//! state with the test through cheap clones, and both can be told to fail on a chosen call,
//! either before the call does anything or after it took effect (a lost answer).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::{
    ConnectSettings, DatabaseSecret, EngineInfo, Error, Login, PasswordPolicy, SecretStore, SecretVersions, Target,
    stage,
};

/// When an injected fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailWhen {
    /// The call fails without doing anything (the request never arrived).
    Before,
    /// The call takes effect but the caller sees an error (the answer was lost).
    After,
}

/// Operations that faults can be injected into; `Any` matches every operation.
trait Operation: Copy + PartialEq {
    const ANY: Self;
}

/// Armed faults: each strikes on the `nth` matching call counted from when it was armed.
#[derive(Debug)]
struct Faults<Op> {
    armed: Vec<(Op, usize, FailWhen)>,
}

impl<Op> Default for Faults<Op> {
    fn default() -> Self {
        Faults { armed: Vec::new() }
    }
}

impl<Op: Operation> Faults<Op> {
    fn arm(&mut self, op: Op, nth: usize, when: FailWhen) {
        assert!(nth >= 1, "calls are counted from 1");
        self.armed.push((op, nth, when));
    }

    /// Counts one call of `op`; says whether it must fail, and when.
    fn on_call(&mut self, op: Op) -> Option<FailWhen> {
        let mut strikes = None;
        for (fault_op, remaining, when) in &mut self.armed {
            if *fault_op == op || *fault_op == Op::ANY {
                *remaining -= 1;
                if *remaining == 0 {
                    // Two faults on one call: failing before wins, nothing happens.
                    strikes = match strikes {
                        Some(FailWhen::Before) => Some(FailWhen::Before),
                        _ => Some(*when),
                    };
                }
            }
        }
        self.armed.retain(|(_, remaining, _)| *remaining > 0);
        strikes
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide its own failure behind ours.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Secrets Manager
// ---------------------------------------------------------------------------------------------

/// A Secrets Manager call, as the steps make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Describe,
    GetValue,
    PutPending,
    MoveStage,
    RandomPassword,
    /// Matches every operation (fault injection only).
    Any,
}

impl Operation for StoreOp {
    const ANY: Self = StoreOp::Any;
}

impl StoreOp {
    /// The Secrets Manager API action.
    pub fn api_name(self) -> &'static str {
        match self {
            StoreOp::Describe => "DescribeSecret",
            StoreOp::GetValue => "GetSecretValue",
            StoreOp::PutPending => "PutSecretValue",
            StoreOp::MoveStage => "UpdateSecretVersionStage",
            StoreOp::RandomPassword => "GetRandomPassword",
            StoreOp::Any => "any operation",
        }
    }
}

/// One version of a secret: its value (none for the placeholder `RotateSecret` creates) and
/// its staging labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub value: Option<String>,
    pub labels: BTreeSet<String>,
}

/// Everything about one secret, for "nothing changed" assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretState {
    pub rotation_enabled: bool,
    /// Every version, labelled or not (AWS keeps unlabelled versions as deprecated).
    pub versions: BTreeMap<String, Version>,
}

#[derive(Debug)]
struct StoredSecret {
    name: String,
    arn: String,
    state: SecretState,
    /// What `RotateSecret` configured: the function's ARN and the schedule.
    rotation: Option<(String, String)>,
}

impl StoredSecret {
    fn holder_of(&self, label: &str) -> Option<String> {
        self.state.versions.iter().find(|(_, v)| v.labels.contains(label)).map(|(id, _)| id.clone())
    }

    /// Attaches `label` to `version`, taking it off the version that held it. A version that
    /// loses `AWSCURRENT` this way gets `AWSPREVIOUS`, as in Secrets Manager.
    fn attach(&mut self, version: &str, label: &str) {
        let holder = self.holder_of(label);
        if holder.as_deref() == Some(version) {
            return;
        }
        if let Some(holder) = &holder {
            self.state.versions.get_mut(holder).expect("holder exists").labels.remove(label);
        }
        self.state.versions.entry(version.to_owned()).or_default().labels.insert(label.to_owned());
        if label == stage::CURRENT
            && let Some(holder) = holder
        {
            self.attach(&holder, stage::PREVIOUS);
        }
    }

    /// `PutSecretValue`: same token and same value is a no-op, same token and another value
    /// is `ResourceExistsException`; otherwise the value is stored and `labels` move to it.
    fn put(&mut self, token: &str, value: &str, labels: &[&str]) -> Result<(), String> {
        if let Some(existing) = self.state.versions.get(token).and_then(|v| v.value.as_deref()) {
            if existing == value {
                return Ok(());
            }
            return Err(format!(
                "ResourceExistsException: a version with VersionId {token} already exists with a different value"
            ));
        }
        self.state.versions.entry(token.to_owned()).or_default().value = Some(value.to_owned());
        for label in labels {
            self.attach(token, label);
        }
        Ok(())
    }

    /// `UpdateSecretVersionStage` with Secrets Manager's rules.
    fn update_stage(&mut self, label: &str, to: Option<&str>, from: Option<&str>) -> Result<(), String> {
        let holder = self.holder_of(label);
        if let Some(from) = from
            && holder.as_deref() != Some(from)
        {
            return Err(format!(
                "InvalidParameterException: the staging label {label} is not attached to version {from} \
                 (RemoveFromVersionId)"
            ));
        }
        let Some(to) = to else {
            let Some(from) = from else {
                return Err("InvalidParameterException: neither MoveToVersionId nor RemoveFromVersionId".into());
            };
            if label == stage::CURRENT {
                return Err("InvalidParameterException: AWSCURRENT can be moved, not removed".into());
            }
            self.state.versions.get_mut(from).expect("holder exists").labels.remove(label);
            return Ok(());
        };
        if !self.state.versions.contains_key(to) {
            return Err(format!("ResourceNotFoundException: the secret has no version {to}"));
        }
        if let Some(holder) = &holder
            && holder != to
            && from.is_none()
        {
            return Err(format!(
                "InvalidParameterException: the staging label {label} is attached to version {holder}; \
                 name it in RemoveFromVersionId to move the label"
            ));
        }
        self.attach(to, label);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct StoreState {
    secrets: Vec<StoredSecret>,
    faults: Faults<StoreOp>,
    calls: Vec<StoreOp>,
    rotation_tokens: Vec<Option<String>>,
    issued_passwords: HashSet<String>,
    password_seed: u64,
    /// Operations refused with `AccessDeniedException` ([`MemoryStore::deny`]).
    denied: Vec<StoreOp>,
}

impl StoreState {
    fn find(&self, secret_id: &str) -> Option<usize> {
        self.secrets.iter().position(|s| s.arn == secret_id || s.name == secret_id)
    }
}

/// Secrets Manager in memory. Clones share one state, so a test keeps a clone to look
/// inside the store it gave to the [`crate::Rotator`]. Secrets answer to their name and
/// to their ARN.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<StoreState>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The ARN Secrets Manager would give a secret of this name.
    pub fn arn_of(name: &str) -> String {
        format!("arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name}-AbCdEf")
    }

    /// Creates a secret whose version `version` holds `value`, staged `AWSCURRENT`, with
    /// rotation not yet enabled (as `CreateSecret` leaves it). Returns its ARN.
    pub fn create_secret(&self, name: &str, version: &str, value: &Value) -> String {
        let mut state = lock(&self.state);
        assert!(state.find(name).is_none(), "secret {name} exists already");
        let arn = Self::arn_of(name);
        let mut secret = StoredSecret {
            name: name.to_owned(),
            arn: arn.clone(),
            state: SecretState { rotation_enabled: false, versions: BTreeMap::new() },
            rotation: None,
        };
        secret.put(version, &value.to_string(), &[stage::CURRENT]).expect("a new secret accepts its first value");
        state.secrets.push(secret);
        arn
    }

    /// `PutSecretValue` outside any step (set-up): stores `value` as `version` and moves
    /// `labels` to it. Counts no call and meets no fault.
    pub fn put_value(&self, secret_id: &str, version: &str, value: &Value, labels: &[&str]) {
        self.put_text(secret_id, version, &value.to_string(), labels);
    }

    /// [`MemoryStore::put_value`] with any `SecretString`, JSON or not.
    pub fn put_text(&self, secret_id: &str, version: &str, text: &str, labels: &[&str]) {
        self.with_secret(secret_id, |secret| secret.put(version, text, labels))
            .unwrap_or_else(|e| panic!("set-up PutSecretValue failed: {e}"));
    }

    /// `UpdateSecretVersionStage` outside any step (set-up).
    pub fn move_label(&self, secret_id: &str, label: &str, to: Option<&str>, from: Option<&str>) {
        self.with_secret(secret_id, |secret| secret.update_stage(label, to, from))
            .unwrap_or_else(|e| panic!("set-up UpdateSecretVersionStage failed: {e}"));
    }

    /// What `RotateSecret` does before it invokes the function: enables rotation and adds
    /// version `token` staged `AWSPENDING`, holding no value.
    pub fn start_rotation(&self, secret_id: &str, token: &str) {
        self.with_secret(secret_id, |secret| {
            if let Some(holder) = secret.holder_of(stage::PENDING)
                && holder != token
            {
                return Err(format!("InvalidRequestException: A previous rotation isn't complete ({holder})"));
            }
            secret.state.rotation_enabled = true;
            secret.attach(token, stage::PENDING);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("RotateSecret failed: {e}"));
    }

    /// What `RotateSecret` with `--rotation-lambda-arn` and `--rotation-rules` configures:
    /// `DescribeSecret` then names the function and the schedule.
    pub fn configure_rotation(&self, secret_id: &str, lambda_arn: &str, schedule: &str) {
        self.with_secret(secret_id, |secret| {
            secret.rotation = Some((lambda_arn.to_owned(), schedule.to_owned()));
            Ok(())
        })
        .expect("secret exists");
    }

    /// From now on every call of `op` is refused as the role may not make it
    /// (`AccessDeniedException`, not retryable), before it does anything.
    pub fn deny(&self, op: StoreOp) {
        lock(&self.state).denied.push(op);
    }

    pub fn set_rotation_enabled(&self, secret_id: &str, enabled: bool) {
        self.with_secret(secret_id, |secret| {
            secret.state.rotation_enabled = enabled;
            Ok(())
        })
        .expect("secret exists");
    }

    /// Makes the `nth` call (counted from now, from 1) of `op` fail, or of any operation
    /// with [`StoreOp::Any`]. The error is a retryable [`Error::SecretsManager`].
    pub fn fail(&self, op: StoreOp, nth: usize, when: FailWhen) {
        lock(&self.state).faults.arm(op, nth, when);
    }

    /// Every call the steps made, in order (including calls that failed).
    pub fn calls(&self) -> Vec<StoreOp> {
        lock(&self.state).calls.clone()
    }

    /// The `RotationToken` of every `PutSecretValue` that reached the store.
    pub fn rotation_tokens(&self) -> Vec<Option<String>> {
        lock(&self.state).rotation_tokens.clone()
    }

    /// The whole state of a secret.
    pub fn secret(&self, secret_id: &str) -> SecretState {
        self.with_secret(secret_id, |secret| Ok(secret.state.clone())).expect("secret exists")
    }

    /// The version that holds `label`.
    pub fn version_with(&self, secret_id: &str, label: &str) -> Option<String> {
        self.with_secret(secret_id, |secret| Ok(secret.holder_of(label))).expect("secret exists")
    }

    /// The labels of `version` (empty when it has none or does not exist).
    pub fn labels(&self, secret_id: &str, version: &str) -> Vec<String> {
        let state = self.secret(secret_id);
        state.versions.get(version).map(|v| v.labels.iter().cloned().collect()).unwrap_or_default()
    }

    /// The value of `version`, if it holds one that is JSON.
    pub fn value(&self, secret_id: &str, version: &str) -> Option<Value> {
        let state = self.secret(secret_id);
        let text = state.versions.get(version)?.value.clone()?;
        serde_json::from_str(&text).ok()
    }

    fn with_secret<R>(
        &self,
        secret_id: &str,
        f: impl FnOnce(&mut StoredSecret) -> Result<R, String>,
    ) -> Result<R, String> {
        let mut state = lock(&self.state);
        let index = state.find(secret_id).ok_or_else(|| format!("ResourceNotFoundException: no secret {secret_id}"))?;
        f(&mut state.secrets[index])
    }

    /// Counts the call, applies an armed fault around `f`.
    fn call<R>(
        &self,
        op: StoreOp,
        secret_id: &str,
        f: impl FnOnce(&mut StoreState) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut state = lock(&self.state);
        state.calls.push(op);
        if state.denied.contains(&op) {
            return Err(refused(
                op,
                secret_id,
                format!(
                    "AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/rotation/fn is not \
                     authorized to perform: secretsmanager:{} on resource: {secret_id}",
                    op.api_name()
                ),
            ));
        }
        let fault = state.faults.on_call(op);
        if fault == Some(FailWhen::Before) {
            return Err(injected(op, secret_id, "the request timed out before it was sent"));
        }
        let result = f(&mut state)?;
        if fault == Some(FailWhen::After) {
            return Err(injected(op, secret_id, "the connection was reset before the answer arrived"));
        }
        Ok(result)
    }
}

fn injected(op: StoreOp, secret_id: &str, detail: &str) -> Error {
    Error::SecretsManager {
        operation: op.api_name(),
        secret: secret_id.to_owned(),
        detail: format!("injected fault: {detail}"),
        retryable: true,
    }
}

/// A refusal from Secrets Manager: a request that cannot succeed as it is.
fn refused(op: StoreOp, secret_id: &str, detail: String) -> Error {
    Error::SecretsManager { operation: op.api_name(), secret: secret_id.to_owned(), detail, retryable: false }
}

fn secret_mut<'a>(state: &'a mut StoreState, op: StoreOp, secret_id: &str) -> Result<&'a mut StoredSecret, Error> {
    let index = state.find(secret_id).ok_or_else(|| {
        refused(op, secret_id, "ResourceNotFoundException: Secrets Manager can't find the secret".into())
    })?;
    Ok(&mut state.secrets[index])
}

impl SecretStore for MemoryStore {
    async fn describe(&self, secret_id: &str) -> Result<SecretVersions, Error> {
        self.call(StoreOp::Describe, secret_id, |state| {
            let secret = secret_mut(state, StoreOp::Describe, secret_id)?;
            // VersionIdsToStages lists only versions with labels: the others are deprecated.
            let stages = secret
                .state
                .versions
                .iter()
                .filter(|(_, v)| !v.labels.is_empty())
                .map(|(id, v)| (id.clone(), v.labels.iter().cloned().collect()))
                .collect();
            let (lambda_arn, schedule) = secret.rotation.clone().unzip();
            Ok(SecretVersions {
                arn: Some(secret.arn.clone()),
                rotation_enabled: secret.state.rotation_enabled,
                stages,
                rotation_lambda_arn: lambda_arn,
                rotation_schedule: schedule,
                last_rotated: None,
                next_rotation: None,
            })
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        label: &str,
    ) -> Result<Option<SecretString>, Error> {
        self.call(StoreOp::GetValue, secret_id, |state| {
            // Secrets Manager answers ResourceNotFoundException for a missing secret, a
            // version/label pair that does not match, and a version without a value; the SDK
            // store turns that into `None`.
            let Some(index) = state.find(secret_id) else { return Ok(None) };
            let secret = &state.secrets[index].state;
            let version = match version_id {
                Some(id) => secret.versions.get(id).filter(|v| v.labels.contains(label)),
                None => secret.versions.values().find(|v| v.labels.contains(label)),
            };
            Ok(version.and_then(|v| v.value.as_deref()).map(SecretString::from))
        })
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&SecretString>,
    ) -> Result<(), Error> {
        self.call(StoreOp::PutPending, secret_id, |state| {
            state.rotation_tokens.push(rotation_token.map(|t| t.expose_secret().to_owned()));
            let secret = secret_mut(state, StoreOp::PutPending, secret_id)?;
            secret
                .put(token, value.expose_secret(), &[stage::PENDING])
                .map_err(|detail| refused(StoreOp::PutPending, secret_id, detail))
        })
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        label: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), Error> {
        self.call(StoreOp::MoveStage, secret_id, |state| {
            let secret = secret_mut(state, StoreOp::MoveStage, secret_id)?;
            secret
                .update_stage(label, to_version, from_version)
                .map_err(|detail| refused(StoreOp::MoveStage, secret_id, detail))
        })
    }

    async fn random_password(&self, policy: &PasswordPolicy) -> Result<SecretString, Error> {
        self.call(StoreOp::RandomPassword, "(none)", |state| {
            let password = generate_password(state, policy)
                .map_err(|detail| refused(StoreOp::RandomPassword, "(none)", detail))?;
            Ok(SecretString::from(password))
        })
    }
}

/// The character classes of `GetRandomPassword`.
const LOWERCASE: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPERCASE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const NUMBERS: &str = "0123456789";
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Deterministic, never the same password twice, following `policy` as `GetRandomPassword`
/// does (length, excluded classes and characters, one of each included class).
fn generate_password(state: &mut StoreState, policy: &PasswordPolicy) -> Result<String, String> {
    let length = usize::try_from(policy.length)
        .ok()
        .filter(|n| (1..=4096).contains(n))
        .ok_or("InvalidParameterException: PasswordLength must be from 1 to 4096")?;
    let classes: Vec<Vec<char>> = [
        (LOWERCASE, policy.exclude_lowercase),
        (UPPERCASE, policy.exclude_uppercase),
        (NUMBERS, policy.exclude_numbers),
        (PUNCTUATION, policy.exclude_punctuation),
    ]
    .into_iter()
    .filter(|(_, excluded)| !excluded)
    .map(|(class, _)| class.chars().filter(|c| !policy.exclude_characters.contains(*c)).collect::<Vec<_>>())
    .filter(|class| !class.is_empty())
    .collect();
    let alphabet: Vec<char> = classes.concat();
    if alphabet.is_empty() {
        return Err("InvalidParameterException: the policy excludes every character".into());
    }
    let require_each = policy.require_each_included_type && length >= classes.len();
    for _ in 0..10_000 {
        state.password_seed += 1;
        let mut seed = state.password_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let password: String = (0..length)
            .map(|_| {
                // xorshift64*: deterministic and good enough to spread characters.
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                let n = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
                alphabet[(n % alphabet.len() as u64) as usize]
            })
            .collect();
        let has_each = classes.iter().all(|class| password.chars().any(|c| class.contains(&c)));
        if (!require_each || has_each) && state.issued_passwords.insert(password.clone()) {
            return Ok(password);
        }
    }
    Err("the fake ran out of distinct passwords of this length".into())
}

// ---------------------------------------------------------------------------------------------
// Target
// ---------------------------------------------------------------------------------------------

/// A call to the fake database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetOp {
    Connect,
    SetPassword,
    Check,
    PrepareAlternate,
    /// Matches every operation (fault injection only).
    Any,
}

impl Operation for TargetOp {
    const ANY: Self = TargetOp::Any;
}

#[derive(Debug, Default)]
struct DbState {
    passwords: HashMap<String, String>,
    /// Old passwords that still log in after a change (`retain_old_passwords`).
    retained: HashMap<String, String>,
    retain_old_passwords: bool,
    unreachable: bool,
    /// Every login fails in the TLS handshake (`set_tls_failure`).
    tls_failure: bool,
    faults: Faults<TargetOp>,
    calls: Vec<TargetOp>,
    login_attempts: HashMap<(String, String), usize>,
    passwords_set: usize,
    /// Users that may change other users' passwords and create users.
    admins: Vec<String>,
    /// Alternate user -> the main user whose privileges it has.
    members: HashMap<String, String>,
    /// Another session's password change: after this many more logins, `user` gets `password`.
    change_after_logins: Option<(usize, String, String)>,
}

/// The database behind [`FakeTarget`]: user -> password. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct FakeDb {
    state: Arc<Mutex<DbState>>,
}

impl FakeDb {
    pub fn new() -> Self {
        FakeDb::default()
    }

    /// Creates `user`, or changes its password, outside any step.
    pub fn set_user_password(&self, user: &str, password: &str) {
        lock(&self.state).passwords.insert(user.to_owned(), password.to_owned());
    }

    /// Creates an administrator, as the master secret's user.
    pub fn add_admin(&self, user: &str, password: &str) {
        let mut state = lock(&self.state);
        state.passwords.insert(user.to_owned(), password.to_owned());
        state.admins.push(user.to_owned());
    }

    /// The main user whose privileges `user` was given, if any.
    pub fn member_of(&self, user: &str) -> Option<String> {
        lock(&self.state).members.get(user).cloned()
    }

    /// The password `user` logs in with.
    pub fn password(&self, user: &str) -> Option<String> {
        lock(&self.state).passwords.get(user).cloned()
    }

    /// While set, every login fails with [`Error::Unreachable`].
    pub fn set_unreachable(&self, unreachable: bool) {
        lock(&self.state).unreachable = unreachable;
    }

    /// While set, every login fails with [`Error::Tls`] (a certificate no trusted CA signed).
    pub fn set_tls_failure(&self, failing: bool) {
        lock(&self.state).tls_failure = failing;
    }

    /// From now on a password change keeps the old password working too, as a broken
    /// `set_password` (or MySQL's `RETAIN CURRENT PASSWORD`) would.
    pub fn retain_old_passwords(&self) {
        lock(&self.state).retain_old_passwords = true;
    }

    /// Makes the `nth` call (counted from now, from 1) of `op` fail, or of any operation with
    /// [`TargetOp::Any`]. A login fails with [`Error::Unreachable`], other calls with a
    /// retryable [`Error::Target`].
    pub fn fail(&self, op: TargetOp, nth: usize, when: FailWhen) {
        lock(&self.state).faults.arm(op, nth, when);
    }

    /// Every call made, in order (including calls that failed).
    pub fn calls(&self) -> Vec<TargetOp> {
        lock(&self.state).calls.clone()
    }

    /// How many times the server answered a login as `user` with `password`.
    pub fn login_attempts(&self, user: &str, password: &str) -> usize {
        let state = lock(&self.state);
        state.login_attempts.get(&(user.to_owned(), password.to_owned())).copied().unwrap_or(0)
    }

    /// Another session (a concurrent invocation) changes `user`'s password to `password` right
    /// after the `logins`-th login from now is answered.
    pub fn change_password_after_logins(&self, logins: usize, user: &str, password: &str) {
        assert!(logins >= 1, "logins are counted from 1");
        lock(&self.state).change_after_logins = Some((logins, user.to_owned(), password.to_owned()));
    }

    /// How many password changes took effect.
    pub fn passwords_set(&self) -> usize {
        lock(&self.state).passwords_set
    }

    fn enter(&self, op: TargetOp) -> (MutexGuard<'_, DbState>, Option<FailWhen>) {
        let mut state = lock(&self.state);
        state.calls.push(op);
        let fault = state.faults.on_call(op);
        (state, fault)
    }
}

/// An open session as `user`.
#[derive(Debug)]
pub struct FakeConnection {
    user: String,
}

/// A [`Target`] over a [`FakeDb`], with PostgreSQL's engine names and port.
#[derive(Debug)]
pub struct FakeTarget {
    db: FakeDb,
}

impl FakeTarget {
    pub fn with_db(db: FakeDb) -> Self {
        FakeTarget { db }
    }
}

fn unreachable(secret: &DatabaseSecret, detail: &str) -> Error {
    Error::Unreachable { host: secret.host.clone(), port: secret.port, detail: detail.to_owned() }
}

fn command_failed(action: &'static str, secret: &DatabaseSecret, detail: &str, retryable: bool) -> Error {
    Error::Target { action, host: secret.host.clone(), port: secret.port, detail: detail.to_owned(), retryable }
}

impl Target for FakeTarget {
    type Connection = FakeConnection;

    const ENGINE: EngineInfo = EngineInfo {
        label: "FakeSQL",
        engines: &["postgres"],
        default_port: 5432,
        default_dbname: Some("postgres"),
        default_excluded_characters: ":/@\"'\\",
        default_username_character_limit: None,
    };

    const MAX_USERNAME_BYTES: usize = 63;

    fn new(_settings: ConnectSettings) -> Self {
        FakeTarget { db: FakeDb::new() }
    }

    async fn connect(&self, secret: &DatabaseSecret) -> Result<Login<FakeConnection>, Error> {
        let (mut state, fault) = self.db.enter(TargetOp::Connect);
        if state.unreachable {
            return Err(unreachable(secret, "connection refused"));
        }
        if state.tls_failure {
            return Err(Error::Tls {
                host: secret.host.clone(),
                port: secret.port,
                detail: "invalid peer certificate: UnknownIssuer".into(),
            });
        }
        if fault == Some(FailWhen::Before) {
            return Err(unreachable(secret, "injected fault: connection timed out"));
        }
        let user = secret.username.clone();
        let password = secret.password.expose_secret();
        *state.login_attempts.entry((user.clone(), password.to_owned())).or_default() += 1;
        let accepted = state.passwords.get(&user).is_some_and(|p| p == password)
            || state.retained.get(&user).is_some_and(|p| p == password);
        if let Some((logins, _, _)) = &mut state.change_after_logins {
            *logins -= 1;
            if *logins == 0
                && let Some((_, changed_user, changed_password)) = state.change_after_logins.take()
            {
                state.passwords.insert(changed_user, changed_password);
            }
        }
        if fault == Some(FailWhen::After) {
            return Err(unreachable(secret, "injected fault: connection reset after the login"));
        }
        Ok(if accepted { Login::Accepted(FakeConnection { user }) } else { Login::Rejected })
    }

    /// Only a user may change its own password in this database.
    async fn set_password(
        &self,
        connection: &mut FakeConnection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), Error> {
        let (mut state, fault) = self.db.enter(TargetOp::SetPassword);
        if fault == Some(FailWhen::Before) {
            return Err(command_failed("ALTER ROLE", secret, "injected fault: connection reset", true));
        }
        if connection.user != secret.username && !state.admins.contains(&connection.user) {
            return Err(command_failed("ALTER ROLE", secret, "permission denied", false));
        }
        let Some(old) = state.passwords.insert(secret.username.clone(), new_password.expose_secret().to_owned()) else {
            state.passwords.remove(&secret.username);
            return Err(command_failed("ALTER ROLE", secret, "the role does not exist", false));
        };
        if state.retain_old_passwords {
            state.retained.insert(secret.username.clone(), old);
        }
        state.passwords_set += 1;
        if fault == Some(FailWhen::After) {
            return Err(command_failed("ALTER ROLE", secret, "injected fault: connection reset after commit", true));
        }
        Ok(())
    }

    async fn check(&self, connection: &mut FakeConnection, secret: &DatabaseSecret) -> Result<(), Error> {
        let (_state, fault) = self.db.enter(TargetOp::Check);
        if fault.is_some() {
            return Err(command_failed("SELECT 1", secret, "injected fault: connection reset", true));
        }
        if connection.user != secret.username {
            return Err(command_failed("SELECT 1", secret, "the session is not the secret's user", false));
        }
        Ok(())
    }

    /// Only an administrator may create users; an alternate user becomes a member of the main one.
    async fn prepare_alternate_user(
        &self,
        master: &mut FakeConnection,
        main_user: &str,
        alternate: &DatabaseSecret,
    ) -> Result<(), Error> {
        let (mut state, fault) = self.db.enter(TargetOp::PrepareAlternate);
        if fault == Some(FailWhen::Before) {
            return Err(command_failed("CREATE ROLE", alternate, "injected fault: connection reset", true));
        }
        if !state.admins.contains(&master.user) {
            return Err(command_failed("CREATE ROLE", alternate, "permission denied", false));
        }
        state.passwords.insert(alternate.username.clone(), alternate.password.expose_secret().to_owned());
        if alternate.username != main_user {
            state.members.insert(alternate.username.clone(), main_user.to_owned());
        }
        state.passwords_set += 1;
        if fault == Some(FailWhen::After) {
            return Err(command_failed(
                "CREATE ROLE",
                alternate,
                "injected fault: connection reset after commit",
                true,
            ));
        }
        Ok(())
    }

    async fn check_alternate(
        &self,
        connection: &mut FakeConnection,
        main_user: &str,
        secret: &DatabaseSecret,
    ) -> Result<(), Error> {
        self.check(connection, secret).await?;
        let state = lock(&self.db.state);
        if connection.user != main_user && state.members.get(&connection.user).map(String::as_str) != Some(main_user) {
            return Err(command_failed(
                "SELECT 1",
                secret,
                "the alternate user lacks the main user's privileges",
                false,
            ));
        }
        Ok(())
    }

    async fn close(&self, _connection: FakeConnection) {}
}

// ---------------------------------------------------------------------------------------------
// The doubles' own rules
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAME: &str = "prod/db";

    fn store_with_secret() -> (MemoryStore, String) {
        let store = MemoryStore::new();
        let arn = store.create_secret(NAME, "v1", &json!({"password": "one"}));
        (store, arn)
    }

    fn policy(length: i64) -> PasswordPolicy {
        PasswordPolicy::from_lookup(&|_| None, ":/@\"'\\").map(|p| PasswordPolicy { length, ..p }).unwrap()
    }

    fn pending(value: &str) -> SecretString {
        SecretString::from(value)
    }

    #[tokio::test]
    async fn a_started_rotation_lists_the_token_but_has_no_value_for_it() {
        let (store, arn) = store_with_secret();
        store.start_rotation(&arn, "t");
        let described = store.describe(NAME).await.unwrap();
        assert!(described.rotation_enabled);
        assert_eq!(described.stages["t"], [stage::PENDING]);
        assert!(store.get_value(&arn, Some("t"), stage::PENDING).await.unwrap().is_none());
        assert_eq!(
            store.get_value(&arn, None, stage::CURRENT).await.unwrap().unwrap().expose_secret(),
            r#"{"password":"one"}"#
        );
    }

    #[tokio::test]
    async fn put_pending_is_idempotent_for_the_same_value_and_refuses_another() {
        let (store, arn) = store_with_secret();
        store.start_rotation(&arn, "t");
        store.put_pending(&arn, "t", &pending("two"), None).await.unwrap();
        store.put_pending(&arn, "t", &pending("two"), None).await.unwrap();
        let err = store.put_pending(&arn, "t", &pending("three"), None).await.unwrap_err();
        assert!(err.to_string().contains("ResourceExistsException"), "{err}");
        assert!(!err.is_retryable());
        assert_eq!(store.secret(&arn).versions["t"].value.as_deref(), Some("two"));
    }

    #[tokio::test]
    async fn put_pending_moves_the_pending_label_and_records_the_rotation_token() {
        let (store, arn) = store_with_secret();
        store.put_value(&arn, "old", &json!({}), &[stage::PENDING]);
        store.put_pending(&arn, "t", &pending("two"), Some(&pending("rt"))).await.unwrap();
        assert_eq!(store.version_with(&arn, stage::PENDING).as_deref(), Some("t"));
        assert!(store.labels(&arn, "old").is_empty());
        assert_eq!(store.rotation_tokens(), [Some("rt".to_owned())]);
    }

    #[tokio::test]
    async fn moving_current_leaves_previous_on_the_version_it_left() {
        let (store, arn) = store_with_secret();
        store.put_value(&arn, "v0", &json!({}), &[stage::PREVIOUS]);
        store.put_value(&arn, "v2", &json!({}), &[stage::PENDING]);
        store.move_stage(&arn, stage::CURRENT, Some("v2"), Some("v1")).await.unwrap();
        assert_eq!(store.labels(&arn, "v2"), [stage::CURRENT, stage::PENDING]);
        assert_eq!(store.labels(&arn, "v1"), [stage::PREVIOUS]);
        assert!(store.labels(&arn, "v0").is_empty());
        assert!(!store.describe(&arn).await.unwrap().stages.contains_key("v0"), "unlabelled versions are not listed");
    }

    #[tokio::test]
    async fn moving_a_label_held_elsewhere_needs_remove_from_version() {
        let (store, arn) = store_with_secret();
        store.put_value(&arn, "v2", &json!({}), &[stage::PENDING]);
        let err = store.move_stage(&arn, stage::CURRENT, Some("v2"), None).await.unwrap_err();
        assert!(err.to_string().contains("RemoveFromVersionId"), "{err}");
        assert_eq!(store.labels(&arn, "v1"), [stage::CURRENT]);
    }

    #[tokio::test]
    async fn removing_a_label_the_version_does_not_hold_fails() {
        let (store, arn) = store_with_secret();
        let err = store.move_stage(&arn, stage::PENDING, None, Some("v1")).await.unwrap_err();
        assert!(err.to_string().contains("not attached to version v1"), "{err}");
        let err = store.move_stage(&arn, stage::CURRENT, None, Some("v1")).await.unwrap_err();
        assert!(err.to_string().contains("moved, not removed"), "{err}");
    }

    #[tokio::test]
    async fn random_passwords_are_distinct_and_follow_the_policy() {
        let store = MemoryStore::new();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let password = store.random_password(&policy(8)).await.unwrap().expose_secret().to_owned();
            assert_eq!(password.chars().count(), 8);
            assert!(!password.contains(['"', '\\', ':', '/', '@', '\'']), "{password}");
            assert!(password.chars().any(|c| c.is_ascii_digit()), "{password}");
            assert!(seen.insert(password));
        }
        let no_punctuation = PasswordPolicy { exclude_punctuation: true, ..policy(4096) };
        let long = store.random_password(&no_punctuation).await.unwrap();
        assert_eq!(long.expose_secret().len(), 4096);
        assert!(long.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(store.random_password(&policy(0)).await.is_err());
    }

    #[tokio::test]
    async fn a_fault_before_does_nothing_and_a_fault_after_takes_effect() {
        let (store, arn) = store_with_secret();
        store.start_rotation(&arn, "t");
        store.fail(StoreOp::PutPending, 1, FailWhen::Before);
        let err = store.put_pending(&arn, "t", &pending("two"), None).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(store.secret(&arn).versions["t"].value, None);

        store.fail(StoreOp::Any, 2, FailWhen::After);
        store.describe(&arn).await.unwrap();
        assert!(store.put_pending(&arn, "t", &pending("two"), None).await.is_err());
        assert_eq!(store.secret(&arn).versions["t"].value.as_deref(), Some("two"));
        store.describe(&arn).await.unwrap();
        assert_eq!(store.calls(), [StoreOp::PutPending, StoreOp::Describe, StoreOp::PutPending, StoreOp::Describe]);
    }

    fn db_secret(user: &str, password: &str) -> DatabaseSecret {
        let text = json!({"host": "h", "username": user, "password": password}).to_string();
        DatabaseSecret::parse(&SecretString::from(text), &FakeTarget::ENGINE).unwrap()
    }

    #[tokio::test]
    async fn the_fake_database_accepts_only_the_password_it_holds() {
        let db = FakeDb::new();
        db.set_user_password("app", "one");
        let target = FakeTarget::with_db(db.clone());
        let Login::Accepted(mut connection) = target.connect(&db_secret("app", "one")).await.unwrap() else {
            panic!("the right password is rejected");
        };
        assert!(matches!(target.connect(&db_secret("app", "two")).await, Ok(Login::Rejected)));
        target.set_password(&mut connection, &db_secret("app", "two"), &pending("two")).await.unwrap();
        assert_eq!(db.password("app").as_deref(), Some("two"));
        assert!(matches!(target.connect(&db_secret("app", "one")).await, Ok(Login::Rejected)));
        assert_eq!(db.login_attempts("app", "one"), 2);
        assert_eq!(db.passwords_set(), 1);

        db.set_unreachable(true);
        assert!(matches!(target.connect(&db_secret("app", "two")).await, Err(Error::Unreachable { .. })));
        assert_eq!(db.login_attempts("app", "two"), 1, "an unreachable server counts no attempt");
    }

    #[tokio::test]
    async fn a_password_change_that_fails_after_taking_effect_is_kept() {
        let db = FakeDb::new();
        db.set_user_password("app", "one");
        let target = FakeTarget::with_db(db.clone());
        let Ok(Login::Accepted(mut connection)) = target.connect(&db_secret("app", "one")).await else {
            panic!("login failed");
        };
        db.fail(TargetOp::SetPassword, 1, FailWhen::After);
        let err = target.set_password(&mut connection, &db_secret("app", "two"), &pending("two")).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(db.password("app").as_deref(), Some("two"));
    }
}
