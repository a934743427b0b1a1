// A test PKI made at test time with rcgen (ECDSA P-256): two unrelated CAs
// ("trusted", the one the proxy's `ca_file` names, and "other", which the
// proxy does not trust), server certificates for `localhost` and
// `127.0.0.1` signed by each, and a client certificate signed by the
// trusted CA. Written as PEM files into a directory of the caller's choice.
// Shared by the integration tests (`tests/support`) and the crate's unit
// tests (`src/native/tls.rs`, through `include!`: hence no inner
// attributes or doc comments here).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM), leaf only.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// The files of the test PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA the proxy is told to trust (PEM).
    pub ca: PathBuf,
    /// A CA nobody is told to trust (PEM).
    pub other_ca: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`, signed by `ca`.
    pub server: CertFiles,
    /// The same names, signed by `other_ca`.
    pub untrusted_server: CertFiles,
    /// A client certificate (`CN=influx-proxy`), signed by `ca`.
    pub client: CertFiles,
    /// Signed by `ca`, for `influx.example` only (not `127.0.0.1`).
    pub other_name: CertFiles,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("generate a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    Ca { cert, key }
}

fn leaf(dir: &Path, file: &str, issuer: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertFiles {
    let key = KeyPair::generate().expect("generate a key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &issuer.cert, &issuer.key).expect("sign");
    let files = CertFiles { cert: dir.join(format!("{file}.pem")), key: dir.join(format!("{file}.key")) };
    std::fs::write(&files.cert, cert.pem()).expect("write a certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("write a key");
    files
}

/// Makes a new test PKI in `dir` (which must exist).
pub fn make(dir: &Path) -> Pki {
    let trusted = ca("influx-proxy test CA");
    let other = ca("some other CA");
    let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&ca_path, trusted.cert.pem()).expect("write the CA");
    std::fs::write(&other_path, other.cert.pem()).expect("write the other CA");
    let names = ["localhost", "127.0.0.1"];
    Pki {
        server: leaf(dir, "server", &trusted, &names, ExtendedKeyUsagePurpose::ServerAuth),
        untrusted_server: leaf(dir, "untrusted-server", &other, &names, ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(dir, "client", &trusted, &["influx-proxy"], ExtendedKeyUsagePurpose::ClientAuth),
        other_name: leaf(
            dir,
            "other-name",
            &trusted,
            &["influx.example"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ca: ca_path,
        other_ca: other_path,
    }
}
