//! A throw-away certificate authority and a server certificate for `localhost` only, so
//! the tests can check both verified TLS and a certificate that does not match the host.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

pub struct TestCertificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn write_test_certificates(dir: &Path) -> Result<TestCertificates> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "rotation-lambdas test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()])?;
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let certs = TestCertificates {
        ca: dir.join("test-ca.pem"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    std::fs::write(&certs.ca, ca.pem())?;
    std::fs::write(&certs.server_cert, server_cert.pem())?;
    std::fs::write(&certs.server_key, server_key.serialize_pem())?;
    Ok(certs)
}
