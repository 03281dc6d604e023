//! `rotation plan`: what a rotation would do, step by step, from the secret's `AWSCURRENT`
//! value and the function's variables. Reads only; describes by strategy, as the engine runs it.

use rotation::{DatabaseSecret, EngineInfo, ExposeSecret, SecretStore, Settings, Strategy, Target, stage};
use serde_json::{Value, json};

use crate::aws::SecretState;
use crate::commands::Ctx;
use crate::ui::{Colour, mask};
use crate::{Engine, Failure};

/// One thing a step does: `kind` is `secretsmanager`, `login`, `statement`, `http` or `local`.
struct Action {
    kind: &'static str,
    text: String,
}

fn sm(text: &str) -> Action {
    Action { kind: "secretsmanager", text: text.to_owned() }
}

fn act(kind: &'static str, text: impl Into<String>) -> Action {
    Action { kind, text: text.into() }
}

struct Plan {
    engine: &'static str,
    /// What the current value holds, values masked.
    current: Vec<(String, String)>,
    strategy: String,
    why: String,
    steps: Vec<(&'static str, Vec<Action>)>,
}

pub async fn plan(ctx: &Ctx<'_>, secret: &str, engine: Engine) -> Result<Value, Failure> {
    let state = SecretState::read(&ctx.client, secret).await?;
    let text =
        ctx.store.get_value(secret, None, stage::CURRENT).await?.ok_or_else(|| {
            Failure::failed(format!("secret {} has no value staged AWSCURRENT", rotation::shown(secret)))
        })?;
    let plan = match engine {
        Engine::Postgres => database::<postgres_rotation::Postgres>(secret, &text, Sql::Postgres)?,
        Engine::Mysql => database::<mysql_rotation::Mysql>(secret, &text, Sql::Mysql)?,
        Engine::Redshift => database::<redshift_rotation::Redshift>(secret, &text, Sql::Redshift)?,
        Engine::ApiKey => api_key(&text)?,
    };
    let ui = ctx.ui;
    ui.line(format!("plan for secret {} ({}); nothing is changed", state.name, plan.engine));
    for (field, value) in &plan.current {
        ui.line(format!("  {field:<10} {value}"));
    }
    ui.line(format!("strategy   {}: {}", ui.paint(Colour::Bold, &plan.strategy), plan.why));
    if let Some(version) = state.in_progress() {
        ui.line(ui.paint(
            Colour::Yellow,
            &format!(
                "a rotation is in progress (version {} staged AWSPENDING): `rotation rotate` refuses until it is \
                 resumed or cancelled",
                version.id
            ),
        ));
    }
    ui.line("");
    let mut rows = vec![vec!["STEP".to_owned(), "KIND".into(), "WHAT".into()]];
    for (step, actions) in &plan.steps {
        for (i, action) in actions.iter().enumerate() {
            rows.push(vec![
                if i == 0 { (*step).to_owned() } else { String::new() },
                action.kind.into(),
                action.text.clone(),
            ]);
        }
    }
    ui.table(&rows, |_, c, _| (c == 1).then_some(Colour::Dim));
    Ok(json!({
        "secret": state.name,
        "engine": plan.engine,
        "current": plan.current.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "strategy": {"name": plan.strategy, "why": plan.why},
        "in_progress": state.in_progress().map(|v| v.id.clone()),
        "steps": plan.steps.iter().map(|(step, actions)| json!({
            "step": step,
            "actions": actions.iter().map(|a| json!({"kind": a.kind, "what": a.text})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

fn tls(mode: rotation::TlsMode) -> &'static str {
    match mode {
        rotation::TlsMode::Disable => "plain text (no TLS)",
        rotation::TlsMode::Require => "TLS, certificate not checked (require)",
        rotation::TlsMode::VerifyCa => "TLS, chain verified (verify-ca)",
        rotation::TlsMode::VerifyFull => "TLS, chain and host name verified (verify-full)",
    }
}

#[derive(Clone, Copy)]
enum Sql {
    Postgres,
    Mysql,
    Redshift,
}

fn quoted(sql: Sql, name: &str) -> String {
    match sql {
        Sql::Mysql => format!("'{}'", name.replace('\'', "''")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

fn database<T: Target>(secret_id: &str, text: &rotation::SecretString, sql: Sql) -> Result<Plan, Failure> {
    let engine: &EngineInfo = &T::ENGINE;
    let secret = DatabaseSecret::parse(text, engine).map_err(|problem| {
        Failure::failed(format!("the AWSCURRENT value of secret {} is invalid: {problem}", rotation::shown(secret_id)))
    })?;
    let settings = Settings::from_env(engine)?;
    let strategy = Strategy::choose(secret.rotation_strategy, settings.strategy, secret.masterarn.is_some());
    let why = if secret.rotation_strategy.is_some() {
        "the secret's `rotation_strategy` field names it".to_owned()
    } else if settings.strategy.is_some() {
        "the secret names none; ROTATION_STRATEGY of this environment names it".to_owned()
    } else if secret.masterarn.is_some() {
        "the secret names none, ROTATION_STRATEGY is not set, and the secret has a `masterarn` (AWS's multi-user rule)"
            .to_owned()
    } else {
        "the secret names none, ROTATION_STRATEGY is not set, and the secret has no `masterarn` (AWS's single-user rule)"
            .to_owned()
    };
    let user = &secret.username;
    let server = format!("{}:{}", secret.host, secret.port);
    let pending_user = match strategy {
        Strategy::AlternatingUsers => rotation::alternate_username(user),
        _ => user.clone(),
    };
    let mut current = vec![
        (
            "engine".to_owned(),
            format!("{} ({})", engine.label, secret.engine.as_deref().unwrap_or("no `engine` field")),
        ),
        ("server".to_owned(), format!("{server}, {}", tls(secret.tls))),
        ("user".to_owned(), user.clone()),
        ("password".to_owned(), mask(secret.password.expose_secret())),
    ];
    if let Some(masterarn) = &secret.masterarn {
        current.push(("masterarn".into(), masterarn.clone()));
    }
    let master = strategy.needs_master();
    let master_read = "GetSecretValue (AWSCURRENT of the secret `masterarn` names: the master's credentials)";

    let mut create = vec![sm("DescribeSecret"), sm("GetSecretValue (AWSCURRENT)")];
    if master {
        create.push(sm(master_read));
    }
    if strategy == Strategy::DualPassword {
        create.push(act(
            "login",
            format!("{user} on {server} with AWSCURRENT (else AWSPREVIOUS): dual-password support"),
        ));
    }
    create.push(sm("GetSecretValue (AWSPENDING of the new version: nothing to do if it holds a value)"));
    create.push(sm("GetRandomPassword (the password policy of the environment)"));
    create.push(sm(&format!(
        "PutSecretValue (the new version, staged AWSPENDING: AWSCURRENT's fields with username {pending_user} and the new password)"
    )));

    let mut set = vec![sm("DescribeSecret"), sm("GetSecretValue (AWSPENDING, AWSCURRENT)")];
    set.push(act(
        "login",
        format!("{pending_user} on {server} with the pending password: if it logs in, nothing to do"),
    ));
    let hashed = match sql {
        Sql::Postgres => "'<SCRAM-SHA-256 verifier>'",
        Sql::Mysql => "'<mysql_native_password hash>'",
        Sql::Redshift => "'md5<md5 of the password and user name>'",
    };
    let keyword = if matches!(sql, Sql::Postgres) { "ROLE" } else { "USER" };
    match strategy {
        Strategy::SingleUser | Strategy::DualPassword => {
            set.push(act("login", format!("{user} on {server} with AWSCURRENT, else AWSPREVIOUS")));
            set.push(act(
                "statement",
                match (sql, strategy) {
                    (Sql::Mysql, Strategy::DualPassword) => format!(
                        "ALTER USER {} IDENTIFIED BY '<new password>' RETAIN CURRENT PASSWORD (after DISCARD OLD PASSWORD)",
                        quoted(sql, user)
                    ),
                    (Sql::Mysql, _) => format!(
                        "SET PASSWORD = {hashed} (MariaDB) or ALTER USER ... IDENTIFIED WITH mysql_native_password AS {hashed} \
                         (MySQL; IDENTIFIED BY '<new password>' for caching_sha2_password accounts), as the user itself"
                    ),
                    (_, Strategy::DualPassword) => format!("none: {} has no dual passwords, createSecret fails", engine.label),
                    _ => format!("ALTER {keyword} {} PASSWORD {hashed}, as the user itself", quoted(sql, user)),
                },
            ));
        }
        Strategy::SingleUserWithMaster => {
            set.push(sm(master_read));
            set.push(act("login", "the master user, with the master secret's password"));
            set.push(act(
                "statement",
                match sql {
                    Sql::Mysql => format!(
                        "ALTER USER {}@<each host of the account> IDENTIFIED BY PASSWORD {hashed} (MariaDB) or \
                         IDENTIFIED WITH mysql_native_password AS {hashed} (MySQL), as the master",
                        quoted(sql, user)
                    ),
                    _ => format!("ALTER {keyword} {} PASSWORD {hashed}, as the master", quoted(sql, user)),
                },
            ));
        }
        Strategy::AlternatingUsers => {
            set.push(act(
                "login",
                format!("{user} on {server} with AWSCURRENT (must log in: it names the user to twin)"),
            ));
            set.push(sm(master_read));
            set.push(act("login", "the master user, with the master secret's password"));
            let twin = match sql {
                Sql::Postgres => format!(
                    "in one transaction: CREATE ROLE {clone} LOGIN PASSWORD {hashed} if missing, else ALTER ROLE {clone} \
                     PASSWORD {hashed}; GRANT {main} TO {clone}; ALTER ROLE {clone} SET role TO {main}; the main user's \
                     settings and connection limit",
                    clone = quoted(sql, &pending_user),
                    main = quoted(sql, rotation::main_username(user))
                ),
                Sql::Mysql => format!(
                    "CREATE USER {clone}@<each host of the main account> ... ACCOUNT LOCK if missing (else ALTER USER \
                     ... {hashed}), the main account's grants replayed from SHOW GRANTS, roles, TLS and limits, then \
                     ACCOUNT UNLOCK",
                    clone = quoted(sql, &pending_user)
                ),
                Sql::Redshift => format!(
                    "in one transaction: CREATE USER {clone} PASSWORD {hashed} if missing, else ALTER USER {clone} PASSWORD \
                     {hashed}; the main user's groups, roles and privileges it lacks granted",
                    clone = quoted(sql, &pending_user)
                ),
            };
            set.push(act("statement", twin));
        }
        Strategy::AdminApi => {
            set.push(act(
                "aws",
                format!(
                    "{}: Redshift ModifyCluster (MasterUserPassword) for `dbClusterIdentifier`, or Redshift Serverless \
                     UpdateNamespace for `namespaceName`, then a login every second until the new password works",
                    if matches!(sql, Sql::Redshift) {
                        "the new password"
                    } else {
                        "none: only Redshift has it, createSecret fails"
                    }
                ),
            ));
        }
    }

    let mut test = vec![sm("DescribeSecret"), sm("GetSecretValue (AWSPENDING, AWSCURRENT)")];
    test.push(act(
        "login",
        format!("{pending_user} on {server} with the pending password, and a check of the session's user"),
    ));
    match strategy {
        Strategy::AlternatingUsers => test.push(act(
            "login",
            format!("(the session of {pending_user} must act with {}'s privileges)", rotation::main_username(user)),
        )),
        Strategy::DualPassword => test.push(act("login", "(the old password keeps working until the next rotation)")),
        _ => test
            .push(act("login", format!("{user} on {server} with the AWSCURRENT password, which must now be refused"))),
    }
    let finish = vec![
        sm("DescribeSecret"),
        sm("UpdateSecretVersionStage (AWSCURRENT to the new version; the old one becomes AWSPREVIOUS)"),
        sm("UpdateSecretVersionStage (AWSPENDING off the new version)"),
    ];
    Ok(Plan {
        engine: engine.label,
        current,
        strategy: strategy.to_string(),
        why,
        steps: vec![("createSecret", create), ("setSecret", set), ("testSecret", test), ("finishSecret", finish)],
    })
}

/// `POST https://host:443/path`: the URL without query, placeholders by name.
fn call(call: &api_key_rotation::profile::Call, profile: &api_key_rotation::profile::Profile) -> String {
    format!("{} {}", call.method(), call.url_for_errors(profile))
}

fn api_key(text: &rotation::SecretString) -> Result<Plan, Failure> {
    use api_key_rotation::profile::{Mode, Profiles};
    let profiles = Profiles::from_lookup(&|name| std::env::var(name).ok())?;
    let name = api_key_rotation::secret::profile_name(text)
        .map_err(|problem| Failure::failed(format!("the AWSCURRENT value is invalid: {problem}")))?;
    let profile = profiles.get(name.as_deref()).map_err(Failure::failed)?;
    let mode = match profile.mode {
        Mode::Generated if profile.push.is_some() => "generated + push",
        Mode::Generated => "generated",
        Mode::Issued => "issued",
    };
    let why = match &name {
        Some(_) => "the secret's `rotation.profile` names the profile; the profile sets the mode".to_owned(),
        None => "the secret names no profile: the default profile (API_KEY_DEFAULT_PROFILE, or the only one) applies"
            .to_owned(),
    };
    let current = vec![
        ("profile".to_owned(), profile.name.clone()),
        ("key".to_owned(), format!("field `{}`", profile.key_field)),
    ];
    let mut create = vec![sm("DescribeSecret"), sm("GetSecretValue (AWSCURRENT)")];
    if let Some(admin) = &profile.admin_secret {
        create.push(sm(&format!("GetSecretValue (AWSCURRENT of the admin secret {admin})")));
    }
    create.push(sm("GetSecretValue (AWSPENDING of the new version: nothing to do if it holds a value)"));
    match profile.mode {
        Mode::Generated => create.push(act(
            "local",
            format!("a new key made here: {} characters, {:?}", profile.generate.length, profile.generate.alphabet),
        )),
        Mode::Issued => {
            if let Some(list) = &profile.list {
                create.push(act(
                    "http",
                    format!("{} (keys named for this secret; orphans revoked)", call(&list.call, profile)),
                ));
                if let Some(lookup) = &list.lookup {
                    create.push(act("http", format!("{} (each listed key)", call(lookup, profile))));
                }
            }
            if let Some(issue) = &profile.issue {
                create.push(act("http", format!("{} (issue the new key)", call(issue, profile))));
            }
        }
    }
    create.push(sm("PutSecretValue (the new version, staged AWSPENDING)"));
    let mut set = vec![sm("DescribeSecret"), sm("GetSecretValue (AWSPENDING, AWSCURRENT)")];
    match &profile.push {
        Some(push) => {
            if let Some(test) = &profile.test {
                set.push(act(
                    "http",
                    format!("{} with the pending value: if accepted, nothing to do", call(test, profile)),
                ));
            }
            set.push(act("http", format!("{} (push the pending value)", call(push, profile))));
        }
        None => set.push(act("local", "nothing: the service reads the secret, or issued the key")),
    }
    let mut test = vec![sm("DescribeSecret"), sm("GetSecretValue (AWSPENDING, AWSCURRENT)")];
    match &profile.test {
        Some(t) => {
            test.push(act("http", format!("{} with the pending key (must be accepted)", call(t, profile))));
            if profile.push.is_some() {
                test.push(act("http", format!("{} with the AWSCURRENT value (must be refused)", call(t, profile))));
            }
        }
        None => test.push(act("local", "the pending key has the profile's format (the profile has no test call)")),
    }
    let mut finish = vec![sm("DescribeSecret")];
    if profile.mode == Mode::Issued
        && let Some(revoke) = &profile.revoke
    {
        finish.push(sm("GetSecretValue (AWSPREVIOUS)"));
        finish.push(act("http", format!("{} (the key falling off AWSPREVIOUS)", call(revoke, profile))));
    }
    finish.push(sm("UpdateSecretVersionStage (AWSCURRENT to the new version; the old one becomes AWSPREVIOUS)"));
    finish.push(sm("UpdateSecretVersionStage (AWSPENDING off the new version)"));
    Ok(Plan {
        engine: "API key",
        current,
        strategy: mode.to_owned(),
        why,
        steps: vec![("createSecret", create), ("setSecret", set), ("testSecret", test), ("finishSecret", finish)],
    })
}
