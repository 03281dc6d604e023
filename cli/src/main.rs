//! `rotation`: the operator's command for Secrets Manager rotations run by these functions.
//!
//! It uses the functions' own engine, the default AWS credential chain (`--region`,
//! `--profile`, and `AWS_ENDPOINT_URL` as the functions honour it), and builds a rotation from
//! the same environment variables a function reads (`CA_BUNDLE_PATH`, `ROTATION_STRATEGY`,
//! `API_KEY_PROFILES`...).
//!
//! ```text
//! rotation status SECRET                      versions, stages, schedule, a rotation in progress
//! rotation check SECRET [--via-function FN]   the preflight report, locally or by the deployed function
//! rotation plan SECRET                        what a rotation would do, step by step; changes nothing
//! rotation rotate SECRET [--resume]           the four steps, run here
//! rotation resume SECRET                      finishes a stuck rotation with its own token
//! rotation cancel SECRET                      abandons a stuck rotation once AWSCURRENT is proven to work
//! ```
//!
//! Output is for people (aligned tables; colours only when stdout is a terminal and `NO_COLOR`
//! is unset) or, with `--json`, one JSON document on stdout. No secret value, token or key is
//! ever printed: values are shown as `•••• (N characters)`.
//!
//! Exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; every check passed |
//! | 1 | a failure: a step or a check failed, a call was refused, cancel refused |
//! | 2 | usage error (unknown command or option, missing argument) |
//! | 3 | refused because of the rotation state: a rotation is in progress (`rotate`), or none is (`resume`, `cancel`) |

mod aws;
mod capture;
mod commands;
mod kinds;
mod plan;
mod ui;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  success; every check passed
  1  a failure: a step or a check failed, a call was refused, cancel refused
  2  usage error
  3  refused because of the rotation state: a rotation is in progress (rotate), or none is (resume, cancel)";

/// Inspect, check, plan and run Secrets Manager rotations with the rotation functions' engine.
///
/// Credentials, region and endpoint come from the default AWS chain (AWS_PROFILE, AWS_REGION,
/// AWS_ENDPOINT_URL...). Local runs read the functions' variables (CA_BUNDLE_PATH,
/// ROTATION_STRATEGY, CONNECT_TIMEOUT_SECONDS, API_KEY_PROFILES...). No secret value is ever printed.
#[derive(Debug, Parser)]
#[command(name = "rotation", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The AWS region (else AWS_REGION or the profile's)
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// The AWS profile of the shared config and credentials files (else AWS_PROFILE)
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// One JSON document on stdout instead of text for people
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Versions and their stages, the rotation's schedule and function, and a rotation in progress or stuck
    #[command(after_help = EXIT_CODES)]
    Status {
        /// The secret's name or ARN
        secret: String,
    },
    /// The preflight report: what a rotation will need, checked without changing anything
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The secret's name or ARN
        secret: String,
        #[command(flatten)]
        engine: EngineArg,
        /// Ask the deployed function (name or ARN) for its report instead of checking from here
        #[arg(long, value_name = "ARN|NAME")]
        via_function: Option<String>,
    },
    /// What a rotation would do, step by step (strategy, calls, logins, statements); changes nothing
    #[command(after_help = EXIT_CODES)]
    Plan {
        /// The secret's name or ARN
        secret: String,
        #[command(flatten)]
        engine: EngineArg,
    },
    /// Rotate now: run the four steps from here, with a new token
    #[command(after_help = EXIT_CODES)]
    Rotate {
        /// The secret's name or ARN
        secret: String,
        #[command(flatten)]
        engine: EngineArg,
        /// Continue the rotation in progress (its token) from createSecret instead of refusing
        #[arg(long)]
        resume: bool,
    },
    /// Finish a stuck rotation with its own token: setSecret, testSecret, finishSecret
    #[command(after_help = EXIT_CODES)]
    Resume {
        /// The secret's name or ARN
        secret: String,
        #[command(flatten)]
        engine: EngineArg,
    },
    /// Abandon a stuck rotation: remove its AWSPENDING label once AWSCURRENT is proven to still work
    #[command(after_help = EXIT_CODES)]
    Cancel {
        /// The secret's name or ARN
        secret: String,
        #[command(flatten)]
        engine: EngineArg,
    },
}

#[derive(Debug, Args, Clone, Copy)]
pub struct EngineArg {
    /// What the secret holds (default: from the secret's `engine` field)
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// PostgreSQL, Aurora PostgreSQL, RDS for PostgreSQL
    Postgres,
    /// MySQL, MariaDB, Aurora MySQL
    Mysql,
    /// Amazon Redshift, Redshift Serverless
    Redshift,
    /// An API key or service password, by the profiles of API_KEY_PROFILES
    ApiKey,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Redshift => "redshift",
            Engine::ApiKey => "api-key",
        }
    }

    /// From a secret's `engine` field, as AWS's templates and RDS write it.
    pub fn from_field(field: &str) -> Option<Engine> {
        match field.trim().to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "aurora-postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" | "aurora-mysql" | "aurora" => Some(Engine::Mysql),
            "redshift" => Some(Engine::Redshift),
            _ => None,
        }
    }
}

/// How a command ended when it did not succeed.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// What the command found before it stopped, for `--json`.
    pub doc: Option<serde_json::Value>,
}

pub const FAILED: u8 = 1;
pub const REFUSED_BY_STATE: u8 = 3;

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), doc: None }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Failure::new(FAILED, message)
    }

    pub fn with_doc(mut self, doc: serde_json::Value) -> Self {
        self.doc = Some(doc);
        self
    }
}

impl From<rotation::Error> for Failure {
    fn from(error: rotation::Error) -> Self {
        Failure::failed(error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The engine's own SDK clients (the Redshift API's, the Secrets Manager store) read the
    // default chain: the options become its variables, before any thread exists.
    // SAFETY: no other thread runs yet.
    unsafe {
        if let Some(region) = &cli.global.region {
            std::env::set_var("AWS_REGION", region);
        }
        if let Some(profile) = &cli.global.profile {
            std::env::set_var("AWS_PROFILE", profile);
        }
    }
    let notes = capture::install();
    let ui = ui::Ui::new(cli.global.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let result = runtime.block_on(commands::run(&cli.command, &ui, &notes));
    match result {
        Ok(doc) => {
            if ui.json {
                ui::print_json(&doc);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if ui.json {
                let mut doc = failure.doc.unwrap_or_else(|| serde_json::json!({}));
                if let Some(fields) = doc.as_object_mut() {
                    fields.insert("error".into(), failure.message.clone().into());
                    fields.insert("exit_code".into(), failure.code.into());
                }
                ui::print_json(&doc);
            }
            eprintln!("{} {}", ui.paint(ui::Colour::Red, "error:"), failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_field_names_the_engine() {
        for (field, engine) in [
            ("postgres", Engine::Postgres),
            ("aurora-postgresql", Engine::Postgres),
            ("mysql", Engine::Mysql),
            ("mariadb", Engine::Mysql),
            ("aurora-mysql", Engine::Mysql),
            ("redshift", Engine::Redshift),
        ] {
            assert_eq!(Engine::from_field(field), Some(engine), "{field}");
        }
        assert_eq!(Engine::from_field("oracle"), None);
    }

    #[test]
    fn the_arguments_parse() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["rotation", "rotate", "s", "--engine", "api-key", "--resume", "--json"]).unwrap();
        assert!(cli.global.json);
        assert!(matches!(
            cli.command,
            Command::Rotate { resume: true, engine: EngineArg { engine: Some(Engine::ApiKey) }, .. }
        ));
    }
}
