//! The one place where database functions open connections: TCP streams with `TCP_NODELAY`,
//! and TLS client configurations built once per process.
//!
//! `TCP_NODELAY` matters more than it looks: a login writes small TLS records back to back,
//! and without it the second waits for the server's delayed ACK (about 40 ms on Linux), twice
//! per login. Trust is Mozilla's roots, the Amazon RDS global bundle (RDS, Aurora and RDS Proxy
//! verify with no setting) and the operator's `CA_BUNDLE_PATH`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::{AMAZON_RDS_ROOTS_PEM, Error, TlsMode};

/// The TLS client configurations of the three verifying modes, parsed and built once.
pub struct TlsConfigs {
    verify_full: Verifying,
    verify_ca: Verifying,
    require: Verifying,
    /// How many certificates the operator's `CA_BUNDLE_PATH` added.
    pub operator_certificates: usize,
}

/// A client configuration and the verifier it was built with.
struct Verifying {
    config: Arc<ClientConfig>,
    #[cfg_attr(not(test), allow(dead_code, reason = "the tests check each mode's verifier directly"))]
    verifier: Arc<dyn ServerCertVerifier>,
}

impl fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigs").field("operator_certificates", &self.operator_certificates).finish()
    }
}

impl TlsConfigs {
    /// Mozilla's roots, the Amazon RDS bundle and `operator_pem` (the content of `CA_BUNDLE_PATH`).
    pub fn new(operator_pem: Option<&[u8]>) -> Result<Self, Error> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let rds = parse_certificates(AMAZON_RDS_ROOTS_PEM)
            .map_err(|problem| Error::Config { variable: "(built-in Amazon RDS bundle)", problem })?;
        roots.add_parsable_certificates(rds);
        let mut operator_certificates = 0;
        if let Some(pem) = operator_pem {
            let certificates = parse_certificates(pem).map_err(|problem| Error::Config {
                variable: "CA_BUNDLE_PATH",
                problem: format!("names a file that {problem}"),
            })?;
            let (added, ignored) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(Error::Config {
                    variable: "CA_BUNDLE_PATH",
                    problem: format!("names a file with no usable CA certificate ({ignored} could not be used)"),
                });
            }
            operator_certificates = added;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain_and_name: Arc<dyn ServerCertVerifier> =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::Config { variable: "CA_BUNDLE_PATH", problem: format!("cannot be used: {e}") })?;
        let chain_only = Arc::new(ChainOnly(chain_and_name.clone()));
        let encryption_only = Arc::new(EncryptionOnly(provider.signature_verification_algorithms));
        let config = |verifier: Arc<dyn ServerCertVerifier>| -> Result<Verifying, Error> {
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config { variable: "(TLS)", problem: e.to_string() })?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            Ok(Verifying { config: Arc::new(config), verifier })
        };
        Ok(TlsConfigs {
            verify_full: config(chain_and_name)?,
            verify_ca: config(chain_only)?,
            require: config(encryption_only)?,
            operator_certificates,
        })
    }

    /// The configuration of a mode; `None` for plain text.
    pub fn for_mode(&self, mode: TlsMode) -> Option<&Arc<ClientConfig>> {
        self.verifying(mode).map(|v| &v.config)
    }

    fn verifying(&self, mode: TlsMode) -> Option<&Verifying> {
        match mode {
            TlsMode::Disable => None,
            TlsMode::Require => Some(&self.require),
            TlsMode::VerifyCa => Some(&self.verify_ca),
            TlsMode::VerifyFull => Some(&self.verify_full),
        }
    }
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("holds an unreadable PEM certificate ({e})"))
}

/// `verify-ca`: the chain must lead to a trusted root; the name need not match the host.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain was good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `sslmode=require`: encrypted, certificate not checked (the secret asked for exactly that).
#[derive(Debug)]
struct EncryptionOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Opens a TCP connection to `host:port` with `TCP_NODELAY`, trying each address the name
/// resolves to, all within `timeout`.
pub async fn open_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, io::Error> {
    let attempt = async {
        let mut last_error = None;
        for address in tokio::net::lookup_host((host, port)).await? {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name has no address")))
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("no TCP connection within {timeout:?}")))
    })
}

/// Whether a client error was caused by TLS (a refused certificate, a wrong host name, a
/// failed handshake).
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    rustls_error(error).is_some()
}

/// rustls's own error anywhere in a client error's chain: clients wrap it in their own errors
/// and in `io::Error`s, whose `source()` skips what they wrap.
pub fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        cause = match error.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.clone().self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn server_certificate(issuer: &Ca, host: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&issuer.params, &issuer.key);
        let certificate = CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
        certificate.der().clone()
    }

    fn verify(configs: &TlsConfigs, mode: TlsMode, certificate: &CertificateDer<'_>, host: &str) -> Result<(), String> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        configs
            .verifying(mode)
            .unwrap()
            .verifier
            .verify_server_cert(certificate, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_operator_ca_is_trusted_for_its_host_names_only() {
        let operator = ca("operator CA");
        let configs = TlsConfigs::new(Some(operator.pem.as_bytes())).unwrap();
        assert_eq!(configs.operator_certificates, 1);
        let certificate = server_certificate(&operator, "db.internal");
        assert_eq!(verify(&configs, TlsMode::VerifyFull, &certificate, "db.internal"), Ok(()));
        let wrong_host = verify(&configs, TlsMode::VerifyFull, &certificate, "other.internal").unwrap_err();
        assert!(wrong_host.contains("not valid for name"), "{wrong_host}");
        assert_eq!(verify(&configs, TlsMode::VerifyCa, &certificate, "other.internal"), Ok(()));
    }

    #[test]
    fn a_ca_in_no_trusted_set_is_refused_by_both_verifying_modes() {
        let stranger = ca("a CA nobody trusts");
        let configs = TlsConfigs::new(Some(ca("operator CA").pem.as_bytes())).unwrap();
        let certificate = server_certificate(&stranger, "db.internal");
        for mode in [TlsMode::VerifyFull, TlsMode::VerifyCa] {
            let refused = verify(&configs, mode, &certificate, "db.internal").unwrap_err();
            assert!(refused.contains("UnknownIssuer") || refused.contains("unknown issuer"), "{mode:?}: {refused}");
        }
        // Without an operator bundle too: only Mozilla's and Amazon RDS's roots.
        let public_only = TlsConfigs::new(None).unwrap();
        assert!(verify(&public_only, TlsMode::VerifyFull, &certificate, "db.internal").is_err());
        // `require` asked for encryption only.
        assert_eq!(verify(&configs, TlsMode::Require, &certificate, "db.internal"), Ok(()));
        assert!(configs.for_mode(TlsMode::Disable).is_none());
    }

    #[test]
    fn a_bundle_without_certificates_is_a_configuration_error() {
        let error = TlsConfigs::new(Some(b"not a certificate")).unwrap_err().to_string();
        assert!(error.contains("CA_BUNDLE_PATH"), "{error}");
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(TlsConfigs::new(Some(broken.as_bytes())).is_err());
    }

    #[test]
    fn the_same_signature_algorithms_as_the_provider() {
        let configs = TlsConfigs::new(None).unwrap();
        let schemes = configs.require.verifier.supported_verify_schemes();
        assert_eq!(
            schemes,
            rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
        );
    }

    #[tokio::test]
    async fn streams_are_opened_with_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = open_tcp("127.0.0.1", port, Duration::from_secs(2)).await.unwrap();
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_closed_port_is_an_io_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(open_tcp("127.0.0.1", port, Duration::from_secs(2)).await.is_err());
    }
}
