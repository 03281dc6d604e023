//! The API-key rotation: what the modes of [`Mode`] add to the engine's four steps.

use std::future::Future;
use std::time::{Duration, Instant};

use rotation::check::Report;
use rotation::{
    CheckContext, Error, ExposeSecret, Rotation, RotationEvent, SecretProblem, SecretStore, SecretString, Step,
    StepContext, stage,
};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::http::{ClientSettings, HttpClient, Request, Response};
use crate::profile::{Call, Mode, Outcome, Profile, Profiles, Values};
use crate::secret::{KeySecret, profile_name};

/// Sends a profile's HTTP requests: the hardened [`HttpClient`], or a double in unit tests.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, request: &Request) -> impl Future<Output = Result<Response, Error>> + Send;
}

impl Transport for HttpClient {
    fn send(&self, request: &Request) -> impl Future<Output = Result<Response, Error>> + Send {
        HttpClient::send(self, request)
    }
}

/// The rotation of API keys and service passwords over the profiles of the function's
/// configuration.
pub struct ApiKeyRotation<H = HttpClient> {
    profiles: Profiles,
    http: H,
}

impl ApiKeyRotation<HttpClient> {
    /// The profiles and the HTTP client, from the environment, once per process.
    pub fn from_env() -> Result<Self, Error> {
        let lookup = |name: &str| std::env::var(name).ok();
        let profiles = Profiles::from_lookup(&lookup)?;
        let settings = ClientSettings::from_lookup(&lookup, profiles.allowed_url_prefixes().to_vec())?;
        Ok(ApiKeyRotation { profiles, http: HttpClient::new(settings)? })
    }
}

/// What every step reads first: the profile and the secret's versions, parsed for it.
struct Loaded<'p> {
    profile: &'p Profile,
    current: KeySecret,
    admin: Option<Map<String, Value>>,
}

impl<H: Transport> Rotation for ApiKeyRotation<H> {
    const LABEL: &'static str = "API key";

    async fn create_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let loaded =
            self.load(step, |p| vec![p.issue.as_ref(), p.revoke.as_ref(), list_call(p), lookup_call(p)]).await?;
        let profile = loaded.profile;
        if profile.mode == Mode::Issued && loaded.current.is_plain() {
            return Err(invalid(
                step,
                stage::CURRENT,
                SecretProblem::Rule {
                    field: "(secret)",
                    rule: format!(
                        "is a plain string, but profile {} issues keys with ids: store a JSON object with `{}`",
                        profile.name, profile.key_field
                    ),
                },
            ));
        }
        if let Some((field, call)) = missing_fields(profile, &loaded.current).into_iter().next() {
            return Err(invalid(
                step,
                stage::CURRENT,
                SecretProblem::FieldRule {
                    field,
                    rule: format!(
                        "is missing (or not a string or number): the `{call}` call of profile {} reads it",
                        profile.name
                    ),
                },
            ));
        }
        let pending_stored = step.value(stage::PENDING).await?.is_some();
        if profile.mode == Mode::Issued {
            // Before returning for a stored value, so every createSecret also revokes what
            // earlier ones left.
            self.revoke_orphans(step, &loaded, pending_stored).await?;
        }
        if pending_stored {
            info!(profile = %profile.name, "a pending value for this token exists already");
            return Ok(());
        }
        let pending = match profile.mode {
            Mode::Generated => loaded.current.with_key(profile.generate.generate(), None),
            Mode::Issued => {
                let (key, key_id) = self.issue(step, &loaded).await?;
                loaded.current.with_key(key, key_id)
            }
        };
        if let Err(error) = step.put_pending(&pending.to_text(profile)).await {
            if profile.mode == Mode::Issued {
                // Not stored: the key must not stay valid. A failure here is left to the next
                // createSecret, which revokes keys named for this token.
                let _ = self.revoke(step, &loaded, &pending).await;
            }
            return Err(error);
        }
        info!(profile = %profile.name, mode = ?profile.mode, "stored the pending version");
        Ok(())
    }

    async fn set_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let loaded = self.load(step, |p| vec![p.test.as_ref(), p.push.as_ref()]).await?;
        let profile = loaded.profile;
        let Some(push) = &profile.push else {
            info!(profile = %profile.name, mode = ?profile.mode, "nothing to set: the service reads the secret or issued the key");
            return Ok(());
        };
        let pending = self.load_pending(step, &loaded).await?;
        if pending.fields() != loaded.current.fields() {
            return Err(step.stale_pending(
                Error::InvalidSecret {
                    secret: step.event.secret_id.clone(),
                    stage: stage::PENDING.to_owned(),
                    problem: SecretProblem::Rule {
                        field: "(fields other than the key)",
                        rule: "differ from AWSCURRENT's: the pending version was made from another current value"
                            .into(),
                    },
                },
                "nothing was pushed for it",
            ));
        }
        if self.test(step, &loaded, &pending, stage::PENDING).await? == Outcome::Accepted {
            info!(profile = %profile.name, "the pending credential works already");
            return Ok(());
        }
        let fields = pending.fields();
        let values = values(step, &loaded, &pending, &fields, Some(&pending.key));
        let (outcome, response) = self.call(step, profile, "push", push, &values).await?;
        expect_accepted(profile, "push", push, outcome, &response)?;
        info!(profile = %profile.name, "pushed the pending credential");
        Ok(())
    }

    async fn test_secret<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let loaded = self.load(step, |p| vec![p.test.as_ref()]).await?;
        let profile = loaded.profile;
        let pending = self.load_pending(step, &loaded).await?;
        if profile.test.is_none() {
            if !profile.generate.matches(pending.key.expose_secret()) {
                return Err(invalid(
                    step,
                    stage::PENDING,
                    SecretProblem::FieldRule {
                        field: profile.key_field.clone(),
                        rule: format!("does not have the format of profile {}'s `generate`", profile.name),
                    },
                ));
            }
            info!(profile = %profile.name, "the pending key has the profile's format (the profile has no test call)");
            return Ok(());
        }
        self.wait_accepted(step, &loaded, &pending).await?;
        if profile.push.is_none() {
            // Issued and self-issued keys: the current key stays valid until it falls off AWSPREVIOUS.
            info!(profile = %profile.name, "the pending key is accepted");
            return Ok(());
        }
        if pending.key.expose_secret() == loaded.current.key.expose_secret() {
            // RotateSecret with RotateImmediately=false tests a copy of the current version.
            info!(
                "the pending credential is the current one (a test without rotation): not checking that it is refused"
            );
            return Ok(());
        }
        if self.test(step, &loaded, &loaded.current, stage::CURRENT).await? == Outcome::Accepted {
            return Err(Error::OldKeyStillAccepted {
                secret: step.event.secret_id.clone(),
                profile: profile.name.clone(),
            });
        }
        info!(profile = %profile.name, "the pending credential works and the old one is refused");
        Ok(())
    }

    async fn check<S: SecretStore>(&self, secret: &CheckContext<'_, S>, report: &mut Report) {
        self.preflight(secret, report).await
    }

    /// Issued keys: the key that is about to fall off `AWSPREVIOUS` is revoked, so that only the
    /// keys staged `AWSCURRENT`, `AWSPREVIOUS` and `AWSPENDING` are valid at the provider.
    async fn before_finish<S: SecretStore>(&self, step: &StepContext<'_, S>) -> Result<(), Error> {
        let loaded = self.load(step, |p| vec![p.revoke.as_ref(), list_call(p), lookup_call(p)]).await?;
        let profile = loaded.profile;
        if profile.mode != Mode::Issued {
            return Ok(());
        }
        let Some(previous_version) = step.versions.version_with(stage::PREVIOUS) else {
            return Ok(());
        };
        if previous_version == step.event.token || step.versions.has_stage(previous_version, stage::CURRENT) {
            return Ok(());
        }
        let Some(text) = step.value(stage::PREVIOUS).await? else {
            return Ok(());
        };
        let previous = match KeySecret::parse(&text, profile) {
            Ok(previous) => previous,
            Err(problem) => {
                // A version from before this profile managed the secret: nothing of ours to revoke.
                warn!(profile = %profile.name, previous_version, %problem, "the AWSPREVIOUS value holds no key of this profile: nothing is revoked");
                return Ok(());
            }
        };
        let key_id = match previous.key_id.clone() {
            Some(id) => Some(id),
            None => {
                let name = profile.key_name(step.secret_arn(), previous_version);
                self.list(step, &loaded).await?.into_iter().find(|(_, n)| *n == name).map(|(id, _)| id)
            }
        };
        if key_id.is_none() {
            warn!(
                profile = %profile.name,
                previous_version,
                "the AWSPREVIOUS key has no id and no listed key is named for it: it is not revoked"
            );
            return Ok(());
        }
        self.revoke(step, &loaded, &previous.with_key(previous.key.clone(), key_id)).await?;
        info!(profile = %profile.name, previous_version, "revoked the key that falls off AWSPREVIOUS");
        Ok(())
    }
}

impl<H: Transport> ApiKeyRotation<H> {
    pub fn new(profiles: Profiles, http: H) -> Self {
        ApiKeyRotation { profiles, http }
    }

    /// The preflight check (read-only: no key is issued, pushed or revoked; only the profile's
    /// `test` call is made, with the current key).
    async fn preflight<S: SecretStore>(&self, secret: &CheckContext<'_, S>, report: &mut Report) {
        let text = match secret.store.get_value(secret.secret_id, None, stage::CURRENT).await {
            Ok(Some(text)) => text,
            _ => {
                report.skipped("profile.resolves", "the AWSCURRENT value cannot be read");
                return;
            }
        };
        let fix_profile = "name a profile of the document in the secret's `rotation.profile`, or set \
                           API_KEY_DEFAULT_PROFILE";
        let name = match profile_name(&text) {
            Ok(name) => name,
            Err(problem) => {
                report.failed("profile.resolves", format!("the AWSCURRENT value is invalid: {problem}"), fix_profile);
                return;
            }
        };
        let profile = match self.profiles.get(name.as_deref()) {
            Ok(profile) => profile,
            Err(rule) => {
                report.failed("profile.resolves", rule, fix_profile);
                return;
            }
        };
        let why = match &name {
            Some(_) => "named by the secret's `rotation.profile`".to_owned(),
            None => "the default: the secret names none (API_KEY_DEFAULT_PROFILE, or the document's only profile)"
                .to_owned(),
        };
        let mode = match profile.mode {
            Mode::Generated if profile.push.is_some() => "generated and pushed",
            Mode::Generated => "generated",
            Mode::Issued => "issued",
        };
        report.passed("profile.resolves", format!("profile {} ({mode} keys), {why}", profile.name));
        let current = match KeySecret::parse(&text, profile) {
            Ok(current) if profile.mode == Mode::Issued && current.is_plain() => {
                report.failed(
                    "secret.parses",
                    format!(
                        "the AWSCURRENT value is a plain string, but profile {} issues keys with ids",
                        profile.name
                    ),
                    format!("store a JSON object with `{}` (and `{}`)", profile.key_field, profile.key_id_field),
                );
                return;
            }
            Ok(current) => current,
            Err(problem) => {
                report.failed(
                    "secret.parses",
                    format!("the AWSCURRENT value is invalid for profile {}: {problem}", profile.name),
                    "correct the AWSCURRENT value (README, API keys: the secret's shapes)",
                );
                return;
            }
        };
        report.passed(
            "secret.parses",
            format!("AWSCURRENT holds a key in `{}` for profile {}", profile.key_field, profile.name),
        );
        let missing: Vec<String> = missing_fields(profile, &current)
            .into_iter()
            .map(|(field, call)| format!("`{}` (read by the `{call}` call)", rotation::shown(&field)))
            .collect();
        if missing.is_empty() {
            report.passed("secret.fields", format!("AWSCURRENT has every field profile {}'s calls read", profile.name));
        } else {
            report.failed(
                "secret.fields",
                format!("AWSCURRENT lacks field {}", missing.join(", ")),
                "add the fields to the AWSCURRENT value (`aws secretsmanager put-secret-value`)",
            );
        }
        let admin = match &profile.admin_secret {
            None => {
                report.skipped("admin.secret", format!("profile {} has no admin secret", profile.name));
                None
            }
            Some(id) => match self.load_admin(secret.store, profile, id).await {
                Ok(admin) => {
                    report.passed("admin.secret", format!("the admin secret {} loads", rotation::shown(id)));
                    Some(admin)
                }
                Err(error) => {
                    report.failed(
                        "admin.secret",
                        error.to_string(),
                        format!(
                            "make {} a readable JSON object with the fields the profile's calls use, and allow the \
                             role secretsmanager:GetSecretValue on it",
                            rotation::shown(id)
                        ),
                    );
                    None
                }
            },
        };
        report.passed(
            "profile.urls",
            format!(
                "calls go to {}, within allowed_url_prefixes (every call's URL was checked when the function started)",
                profile.base_url
            ),
        );
        let Some(test) = &profile.test else {
            if profile.mode == Mode::Generated {
                if profile.generate.matches(current.key.expose_secret()) {
                    report.passed(
                        "credential.current",
                        format!("profile {} has no test call; the current key has its format", profile.name),
                    );
                } else {
                    report.failed(
                        "credential.current",
                        format!("the current key does not have the format of profile {}'s `generate`", profile.name),
                        "store a key of the profile's format, or correct the profile's `generate`",
                    );
                }
            } else {
                report.skipped("credential.current", format!("profile {} has no test call", profile.name));
            }
            return;
        };
        if profile.admin_secret.is_some() && admin.is_none() {
            report.skipped("credential.current", "the admin secret the calls use cannot be loaded");
            return;
        }
        // The test call renders `{version}` from the event: the current version stands in for it.
        let version = secret.versions.version_with(stage::CURRENT).unwrap_or("AWSCURRENT").to_owned();
        let event = RotationEvent {
            step: Step::Test,
            secret_id: secret.secret_id.to_owned(),
            token: version,
            rotation_token: None,
        };
        let step = StepContext { store: secret.store, event: &event, versions: secret.versions };
        let loaded = Loaded { profile, current, admin };
        match self.test(&step, &loaded, &loaded.current, stage::CURRENT).await {
            Ok(Outcome::Accepted) => report.passed(
                "credential.current",
                format!("the `test` call ({}) accepts the current key", test.url_for_errors(profile)),
            ),
            Ok(_) => report.failed(
                "credential.current",
                format!("the `test` call ({}) refuses the current key", test.url_for_errors(profile)),
                "correct AWSCURRENT: store the key the service accepts (or issue one and store it with its id)",
            ),
            Err(error) => report.failed(
                "credential.current",
                error.to_string(),
                "check the function's network path to the service (VPC, NAT, security groups), the service's \
                 certificate (CA_BUNDLE_PATH) and REQUEST_TIMEOUT_SECONDS",
            ),
        }
    }

    /// The current version, the profile it names and, when one of the step's `calls` reads it,
    /// the profile's admin secret.
    async fn load<'p, S: SecretStore>(
        &'p self,
        step: &StepContext<'_, S>,
        calls: impl Fn(&Profile) -> Vec<Option<&Call>>,
    ) -> Result<Loaded<'p>, Error> {
        let text = step.required_value(stage::CURRENT).await?;
        let name = profile_name(&text).map_err(|problem| invalid(step, stage::CURRENT, problem))?;
        let profile = self
            .profiles
            .get(name.as_deref())
            .map_err(|rule| invalid(step, stage::CURRENT, SecretProblem::Rule { field: "rotation.profile", rule }))?;
        let current = KeySecret::parse(&text, profile).map_err(|problem| invalid(step, stage::CURRENT, problem))?;
        let needs_admin = calls(profile).into_iter().flatten().any(Call::uses_admin);
        let admin = match &profile.admin_secret {
            Some(id) if needs_admin => Some(self.load_admin(step.store, profile, id).await?),
            _ => None,
        };
        Ok(Loaded { profile, current, admin })
    }

    async fn load_admin<S: SecretStore>(
        &self,
        store: &S,
        profile: &Profile,
        id: &str,
    ) -> Result<Map<String, Value>, Error> {
        let admin_error = |problem: &str| Error::AdminSecret {
            profile: profile.name.clone(),
            admin_secret: rotation::shown(id),
            problem: problem.to_owned(),
        };
        let text = match store.get_value(id, None, stage::CURRENT).await {
            Ok(Some(text)) => text,
            Ok(None) => return Err(admin_error("cannot be read: it does not exist or has no AWSCURRENT value")),
            Err(error @ Error::SecretsManager { retryable: true, .. }) => return Err(error),
            Err(error) => return Err(admin_error(&format!("cannot be read: {error}"))),
        };
        match serde_json::from_str::<Value>(text.expose_secret()) {
            Ok(Value::Object(fields)) => Ok(fields),
            _ => Err(admin_error("is not a JSON object")),
        }
    }

    async fn load_pending<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
    ) -> Result<KeySecret, Error> {
        let text = step.required_value(stage::PENDING).await?;
        KeySecret::parse(&text, loaded.profile).map_err(|problem| {
            step.stale_pending(
                invalid(step, stage::PENDING, problem),
                "no step can use it, so nothing was changed for it",
            )
        })
    }

    /// Renders and sends one call of the profile; the answer's status is classified by the call.
    async fn call<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        profile: &Profile,
        name: &'static str,
        call: &Call,
        values: &Values<'_>,
    ) -> Result<(Outcome, Response), Error> {
        let request = call.request(profile, name, values).map_err(|problem| Error::InvalidSecret {
            secret: step.event.secret_id.clone(),
            stage: stage::CURRENT.to_owned(),
            problem: SecretProblem::NeededByProfile {
                profile: profile.name.clone(),
                call: name,
                what: problem.to_string(),
            },
        })?;
        let started = Instant::now();
        let response = self.http.send(&request).await?;
        let outcome = call.outcome(response.status);
        info!(
            profile = %profile.name,
            call = name,
            status = response.status,
            outcome = ?outcome,
            duration_ms = started.elapsed().as_millis() as u64,
            "provider call"
        );
        Ok((outcome, response))
    }

    /// Whether the profile's `test` call accepts `secret`'s key. A status neither accepted nor
    /// refused is an error.
    async fn test<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
        secret: &KeySecret,
        stage_name: &str,
    ) -> Result<Outcome, Error> {
        let profile = loaded.profile;
        let Some(test) = &profile.test else {
            return Ok(Outcome::Refused);
        };
        let fields = secret.fields();
        let values = values(step, loaded, secret, &fields, Some(&secret.key));
        let (outcome, response) = self.call(step, profile, "test", test, &values).await?;
        match outcome {
            Outcome::Accepted | Outcome::Refused => {
                info!(profile = %profile.name, stage = stage_name, outcome = ?outcome, "tested a key");
                Ok(outcome)
            }
            Outcome::Gone | Outcome::Unexpected => Err(unexpected(profile, "test", test, &response)),
        }
    }

    /// The pending key is accepted, tried again while the profile's propagation time lasts
    /// (less when the invocation ends sooner).
    async fn wait_accepted<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
        pending: &KeySecret,
    ) -> Result<(), Error> {
        let profile = loaded.profile;
        let until = Instant::now() + rotation::deadline::bound(profile.propagation);
        loop {
            if self.test(step, loaded, pending, stage::PENDING).await? == Outcome::Accepted {
                return Ok(());
            }
            let pause = Duration::from_secs(1).min(until.saturating_duration_since(Instant::now()));
            if pause.is_zero() {
                let hint = if profile.push.is_some() {
                    ": setSecret has not run or did not take effect".to_owned()
                } else if profile.propagation.is_zero() {
                    String::new()
                } else {
                    format!(" (tried for {} s, the profile's propagation_seconds)", profile.propagation.as_secs())
                };
                return Err(Error::KeyRejected {
                    secret: step.event.secret_id.clone(),
                    stage: stage::PENDING.to_owned(),
                    profile: profile.name.clone(),
                    hint,
                });
            }
            info!(profile = %profile.name, "the pending key is refused; trying again while it propagates");
            tokio::time::sleep(pause).await;
        }
    }

    /// Asks the provider for a new key named for this secret and token.
    async fn issue<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
    ) -> Result<(SecretString, Option<String>), Error> {
        let profile = loaded.profile;
        let issue = profile.issue.as_ref().expect("profiles of mode issued have an issue call");
        let key_name = profile.key_name(step.secret_arn(), &step.event.token);
        let fields = loaded.current.fields();
        let values = Values {
            key_name: Some(&key_name),
            version: &step.event.token,
            key_id: None,
            value: None,
            fields: &fields,
            admin: loaded.admin.as_ref(),
        };
        let (outcome, response) = self.call(step, profile, "issue", issue, &values).await?;
        expect_accepted(profile, "issue", issue, outcome, &response)?;
        let (key, key_id) = issue.read_issued(response.body()).map_err(|problem| Error::ProviderCall {
            profile: profile.name.clone(),
            call: "issue",
            url: issue.url_for_errors(profile),
            detail: format!("the answer cannot be read: {problem}"),
            retryable: false,
        })?;
        info!(profile = %profile.name, key_name, "the provider issued a key");
        Ok((key, key_id))
    }

    /// Revokes `secret`'s key by its id; "no such key" counts as revoked.
    async fn revoke<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
        secret: &KeySecret,
    ) -> Result<(), Error> {
        let profile = loaded.profile;
        let revoke = profile.revoke.as_ref().expect("profiles of mode issued have a revoke call");
        let fields = secret.fields();
        let values = values(step, loaded, secret, &fields, None);
        let (outcome, response) = self.call(step, profile, "revoke", revoke, &values).await?;
        match outcome {
            Outcome::Accepted | Outcome::Gone => Ok(()),
            Outcome::Refused | Outcome::Unexpected => Err(unexpected(profile, "revoke", revoke, &response)),
        }
    }

    /// The provider's keys named for this secret: (id, name). Empty when the profile has no `list`.
    async fn list<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
    ) -> Result<Vec<(String, String)>, Error> {
        let profile = loaded.profile;
        let Some(list) = &profile.list else {
            return Ok(Vec::new());
        };
        let stem = profile.key_name_stem(step.secret_arn());
        let fields = loaded.current.fields();
        let values = Values {
            key_name: None,
            version: &step.event.token,
            key_id: None,
            value: None,
            fields: &fields,
            admin: loaded.admin.as_ref(),
        };
        let (outcome, response) = self.call(step, profile, "list", &list.call, &values).await?;
        if outcome == Outcome::Gone {
            return Ok(Vec::new());
        }
        expect_accepted(profile, "list", &list.call, outcome, &response)?;
        let items = list.read_items(response.body()).map_err(|problem| Error::ProviderCall {
            profile: profile.name.clone(),
            call: "list",
            url: list.call.url_for_errors(profile),
            detail: format!("the answer cannot be read: {problem}"),
            retryable: false,
        })?;
        let mut named = Vec::new();
        for (id, name) in items {
            let name = match (name, &list.lookup) {
                (Some(name), _) => Some(name),
                (None, Some(lookup)) => {
                    let values = Values {
                        key_name: None,
                        version: &step.event.token,
                        key_id: Some(&id),
                        value: None,
                        fields: &fields,
                        admin: loaded.admin.as_ref(),
                    };
                    let (outcome, response) = self.call(step, profile, "lookup", lookup, &values).await?;
                    match outcome {
                        Outcome::Accepted => list.read_lookup_name(response.body()),
                        Outcome::Gone => None,
                        _ => return Err(unexpected(profile, "lookup", lookup, &response)),
                    }
                }
                (None, None) => None,
            };
            if let Some(name) = name.filter(|name| name.starts_with(&stem)) {
                named.push((id, name));
            }
        }
        Ok(named)
    }

    /// Revokes the keys named for this secret whose version holds no stage, and the key named
    /// for this token (issued by an earlier createSecret whose value was never stored).
    async fn revoke_orphans<S: SecretStore>(
        &self,
        step: &StepContext<'_, S>,
        loaded: &Loaded<'_>,
        pending_stored: bool,
    ) -> Result<(), Error> {
        let profile = loaded.profile;
        if profile.list.is_none() {
            return Ok(());
        }
        let arn = step.secret_arn();
        let keep: Vec<String> = step
            .versions
            .stages
            .iter()
            .filter(|(version, labels)| !labels.is_empty() && (pending_stored || **version != step.event.token))
            .map(|(version, _)| profile.key_name(arn, version))
            .collect();
        for (id, name) in self.list(step, loaded).await? {
            if keep.contains(&name) {
                continue;
            }
            let orphan = loaded.current.with_key(SecretString::from(String::new()), Some(id));
            self.revoke(step, loaded, &orphan).await?;
            info!(profile = %profile.name, key_name = %name, "revoked a key whose version holds no stage or was never stored");
        }
        Ok(())
    }
}

fn list_call(profile: &Profile) -> Option<&Call> {
    profile.list.as_ref().map(|list| &list.call)
}

fn lookup_call(profile: &Profile) -> Option<&Call> {
    profile.list.as_ref().and_then(|list| list.lookup.as_ref())
}

/// The fields the profile's calls read (`{field.NAME}`) that `secret` lacks, each with the first
/// call that reads it. A field must be a string or a number to fill a placeholder.
fn missing_fields(profile: &Profile, secret: &KeySecret) -> Vec<(String, &'static str)> {
    let fields = secret.fields();
    profile
        .fields_used()
        .into_iter()
        .filter(|(field, _)| !matches!(fields.get(field), Some(Value::String(_) | Value::Number(_))))
        .collect()
}

/// The placeholders' values for a call about `secret`: its id, and `value` when the call sends a key.
fn values<'a, S>(
    step: &'a StepContext<'_, S>,
    loaded: &'a Loaded<'_>,
    secret: &'a KeySecret,
    fields: &'a Map<String, Value>,
    value: Option<&'a SecretString>,
) -> Values<'a> {
    Values {
        key_name: None,
        version: &step.event.token,
        key_id: secret.key_id.as_deref(),
        value,
        fields,
        admin: loaded.admin.as_ref(),
    }
}

/// A call answered with a status the profile does not list as success.
fn expect_accepted(
    profile: &Profile,
    name: &'static str,
    call: &Call,
    outcome: Outcome,
    response: &Response,
) -> Result<(), Error> {
    match outcome {
        Outcome::Accepted => Ok(()),
        _ => Err(unexpected(profile, name, call, response)),
    }
}

/// The error for an answer the call does not expect: retryable when the service says "later"
/// (429, 5xx). Never the body: it may hold a key.
fn unexpected(profile: &Profile, name: &'static str, call: &Call, response: &Response) -> Error {
    let status = response.status;
    let detail = match status {
        300..=399 => format!("answered {status}, a redirect, which is never followed"),
        429 => format!("answered {status} (too many requests)"),
        500..=599 => format!("answered {status} (a server error)"),
        _ => format!("answered {status}, which the profile does not expect"),
    };
    Error::ProviderCall {
        profile: profile.name.clone(),
        call: name,
        url: call.url_for_errors(profile),
        detail,
        retryable: status == 429 || (500..=599).contains(&status),
    }
}

fn invalid<S>(step: &StepContext<'_, S>, stage_name: &str, problem: SecretProblem) -> Error {
    Error::InvalidSecret { secret: step.event.secret_id.clone(), stage: stage_name.to_owned(), problem }
}
