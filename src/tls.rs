//! TLS settings as the configuration gives them: file names only. The core
//! does no IO, so it neither reads these files nor speaks TLS; both hosts
//! do, with the same code (`crate::host_tls`, rustls; README.md, "TLS").
//!
//! - [`BackendTls`]: how the proxy verifies an `https://` backend and,
//!   optionally, which client certificate it shows (mutual TLS). Per backend
//!   (`backends.<name>.tls`) or for every `https://` backend without its own
//!   (`backend_tls`).
//! - [`ListenTls`]: the certificate and key of the proxy's own listener
//!   (`listen_tls`): clients then talk HTTPS to `listen`.
//!
//! Certificates are always verified (chain to a trusted root, validity
//! dates, the backend URL's host name or IP address in the certificate's
//! subject alternative names); there is no setting to turn that off.

use serde::Deserialize;

/// How to trust and authenticate to an `https://` backend. Every field is a
/// path to a PEM file, relative to the working directory.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// CA certificates (PEM, one or more `CERTIFICATE` blocks) trusted for
    /// the backend's certificate chain, instead of the operating system's
    /// trust store. Default: none, the system store (rustls-native-certs);
    /// required in the wasm build, which has no system store.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate chain (PEM, leaf first) shown to the backend, for
    /// mutual TLS. Requires `client_key_file`. Default: none.
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC) of
    /// `client_cert_file`. Requires `client_cert_file`. Default: none.
    #[serde(default)]
    pub client_key_file: Option<String>,
}

impl BackendTls {
    /// Checks what can be checked without reading the files:
    /// `Err((field, problem))` when only one of `client_cert_file` and
    /// `client_key_file` is set, or a file name is empty.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, value) in [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ] {
            if value.as_deref() == Some("") {
                return Err((field, "must not be empty".to_string()));
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => {
                Err(("client_key_file", "is required with client_cert_file (mutual TLS needs both)".into()))
            }
            (None, Some(_)) => {
                Err(("client_cert_file", "is required with client_key_file (mutual TLS needs both)".into()))
            }
            _ => Ok(()),
        }
    }
}

/// The proxy's own TLS listener: clients connect with HTTPS to `listen`.
/// Paths to PEM files, relative to the working directory.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: String,
}

impl ListenTls {
    /// `Err((field, problem))` when a file name is empty.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.cert_file.is_empty() {
            return Err(("cert_file", "must not be empty".to_string()));
        }
        if self.key_file.is_empty() {
            return Err(("key_file", "must not be empty".to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        let only_cert = BackendTls { client_cert_file: Some("c.pem".into()), ..Default::default() };
        assert_eq!(only_cert.validate().unwrap_err().0, "client_key_file");
        let only_key = BackendTls { client_key_file: Some("k.pem".into()), ..Default::default() };
        assert_eq!(only_key.validate().unwrap_err().0, "client_cert_file");
        let both = BackendTls {
            client_cert_file: Some("c.pem".into()),
            client_key_file: Some("k.pem".into()),
            ca_file: Some("ca.pem".into()),
        };
        assert_eq!(both.validate(), Ok(()));
        assert_eq!(BackendTls::default().validate(), Ok(()));
        let empty = BackendTls { ca_file: Some(String::new()), ..Default::default() };
        assert_eq!(empty.validate().unwrap_err(), ("ca_file", "must not be empty".to_string()));
    }
}
