//! Installs what the local services need, once per machine, into a cache directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The last release of LocalStack's open-source core, and the pins it needs to start.
const LOCALSTACK_PACKAGES: &[&str] =
    &["localstack-core[runtime]==2026.3.0", "cbor2<5.7", "service_identity", "pyOpenSSL<24.3"];
const LOCALSTACK_STAMP: &str = "localstack-core 2026.3.0 with cbor2<5.7 pyOpenSSL<24.3";
const CARGO_LAMBDA_PACKAGE: &str = "cargo-lambda==1.9.2";

/// Where installed tools live: `$ROTATION_TOOLS_DIR`, else `~/.cache/rotation-lambdas`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROTATION_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("rotation-lambdas")
}

pub fn progress(message: &str) {
    eprintln!("==> {message}");
}

pub fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("{what}: cannot start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).as_deref() == Some("0")
}

/// A Python 3.12 or newer: LocalStack's code needs it.
fn python_312() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(root) = output(Command::new("pyenv").arg("root")) {
        let mut versions: Vec<PathBuf> = std::fs::read_dir(Path::new(&root).join("versions"))
            .map(|entries| entries.flatten().map(|e| e.path().join("bin").join("python3")).collect())
            .unwrap_or_default();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    for name in ["python3.14", "python3.13", "python3.12", "python3"] {
        candidates.push(PathBuf::from(name));
    }
    for python in candidates {
        let version = output(
            Command::new(&python).args(["-c", "import sys; print(sys.version_info[0] * 100 + sys.version_info[1])"]),
        );
        if version.and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v >= 312) {
            return Ok(python);
        }
    }
    bail!(
        "LocalStack needs Python 3.12 or newer and none was found (tried pyenv and python3.1x on PATH); install one, e.g. `apt-get install python3.12` or `pyenv install 3.12`"
    )
}

/// LocalStack in its own virtual environment; returns its Python.
pub fn ensure_localstack() -> Result<PathBuf> {
    let venv = tools_dir().join("localstack");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == LOCALSTACK_STAMP) {
        return Ok(python);
    }
    progress("installing LocalStack (Python virtual environment, about a minute)");
    let base = python_312()?;
    run(Command::new(&base).args(["-m", "venv", "--clear"]).arg(&venv), "creating LocalStack's virtual environment")?;
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(LOCALSTACK_PACKAGES),
        "installing LocalStack",
    )?;
    std::fs::write(&stamp, LOCALSTACK_STAMP)?;
    Ok(python)
}

/// A directory holding `cargo-lambda`, to put first on `PATH`.
pub fn ensure_cargo_lambda() -> Result<PathBuf> {
    let venv = tools_dir().join("cargo-lambda");
    let bin = venv.join("bin");
    if bin.join("cargo-lambda").exists() {
        return Ok(bin);
    }
    progress("installing cargo-lambda (from PyPI)");
    run(
        Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv),
        "creating cargo-lambda's virtual environment",
    )?;
    run(
        Command::new(bin.join("pip")).args(["install", "--quiet", "--disable-pip-version-check", CARGO_LAMBDA_PACKAGE]),
        "installing cargo-lambda",
    )?;
    Ok(bin)
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`).
pub fn ensure_postgres() -> Result<PathBuf> {
    if let Some(dir) = find_postgres() {
        return Ok(dir);
    }
    if !is_root() {
        bail!(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found; install them, e.g. `sudo apt-get install postgresql`"
        );
    }
    progress("installing PostgreSQL (apt-get install postgresql)");
    run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install postgresql",
    )?;
    find_postgres().context("PostgreSQL was installed but initdb is still not found")
}

fn find_postgres() -> Option<PathBuf> {
    if let Some(path) = output(Command::new("sh").args(["-c", "command -v initdb"])) {
        return Path::new(&path).parent().map(Path::to_path_buf);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The directory of MariaDB's server programs (`mariadbd`, `mariadb-install-db`).
pub fn ensure_mariadb() -> Result<PathBuf> {
    let find =
        || ["/usr/sbin", "/usr/bin", "/usr/local/bin"].iter().map(PathBuf::from).find(|d| d.join("mariadbd").exists());
    if let Some(dir) = find() {
        return Ok(dir);
    }
    if !is_root() {
        bail!("MariaDB's server (mariadbd) was not found; install it, e.g. `sudo apt-get install mariadb-server`");
    }
    progress("installing MariaDB (apt-get install mariadb-server)");
    run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "mariadb-server", "mariadb-client"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install mariadb-server",
    )?;
    find().context("MariaDB was installed but mariadbd is still not found")
}
