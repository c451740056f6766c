//! What every chat network's settings share, whatever its protocol: a name that is one word
//! and unique across all networks, the pace of its lines, and its TLS files (`ca_file`,
//! `cert_file`, `key_file`, one meaning on every network).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// How fast lines may go out: up to `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub burst: u32,
    pub per_second: f64,
}

impl RateConfig {
    /// `at.rate: …` when a value would stop the network's lines or mean nothing.
    pub fn check(&self, at: &str) -> Result<(), String> {
        if self.burst == 0 || self.per_second.is_nan() || self.per_second <= 0.0 {
            return Err(format!("{at}: burst and per_second must be positive"));
        }
        Ok(())
    }
}

/// `at.name: …` unless `name` is one word.
pub fn check_name(name: &str, at: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains(char::is_control) {
        return Err(format!("{at}.name: must be one word"));
    }
    Ok(())
}

/// The files a chat network's TLS is built from, under the keys every network spells the
/// same way. `ca_file` is trusted *beside* the system's roots, never instead of them: an
/// operator who adds a private CA for one server expects the public ones to keep working.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatTls<'a> {
    /// PEM certificates to trust beside the system's (a private CA, a self-signed server).
    pub ca_file: Option<&'a Path>,
    /// PEM client certificate (chain), offered in TLS with `key_file`.
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
}

impl ChatTls<'_> {
    /// `at: cert_file and key_file go together` unless both or neither are set.
    pub fn check(&self, at: &str) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(format!("{at}: cert_file and key_file go together"));
        }
        Ok(())
    }

    /// The roots to verify a server by: the system's, and the certificates of `ca_file`.
    pub fn roots(&self) -> Result<RootCertStore, String> {
        let system = rustls_native_certs::load_native_certs();
        for e in &system.errors {
            tracing::warn!(error = %e, "a system CA certificate could not be read");
        }
        self.roots_beside(system.certs)
    }

    fn roots_beside(&self, system: Vec<CertificateDer<'static>>) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system);
        if let Some(path) = self.ca_file {
            let unusable = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", path.display());
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| unusable(&e))?
                .collect::<Result<_, _>>()
                .map_err(|e| unusable(&e))?;
            if certs.is_empty() {
                return Err(unusable(&"holds no certificate"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| unusable(&e))?;
            }
        }
        if roots.is_empty() {
            return Err("no CA certificates: the system has none; set ca_file".into());
        }
        Ok(roots)
    }

    /// rustls on ring (no aws-lc, no cmake) with [`ChatTls::roots`] and the client
    /// certificate, if any. Built once per network, so a bad file shows at start rather than
    /// at every reconnect.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        self.client_config_with(self.roots()?)
    }

    fn client_config_with(&self, roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots);
        let config = match (self.cert_file, self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!(
                        "cert_file {}: holds no certificate",
                        cert.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("key_file {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("cert_file {}: {e}", cert.display()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("cert_file and key_file go together".into()),
        };
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_let_lines_out() {
        let rate = |burst, per_second| RateConfig { burst, per_second };
        assert!(rate(5, 0.8).check("chat.irc[0].rate").is_ok());
        for bad in [rate(0, 1.0), rate(5, 0.0), rate(5, -1.0), rate(5, f64::NAN)] {
            assert_eq!(
                bad.check("chat.xmpp[1].rate").unwrap_err(),
                "chat.xmpp[1].rate: burst and per_second must be positive"
            );
        }
    }

    #[test]
    fn names_are_one_word() {
        assert!(check_name("libera", "chat.irc[0]").is_ok());
        assert_eq!(
            check_name("my net", "chat.xmpp[0]").unwrap_err(),
            "chat.xmpp[0].name: must be one word"
        );
        assert!(check_name("", "chat.irc[0]").is_err());
    }

    /// A throwaway self-signed CA (P-256), and its key, for the TLS helper's tests.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUNlwrtRd0EOZ2BYEXGgS7mto4BhkwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTamFydmlzIHVuaXQtdGVzdCBDQTAgFw0yNjEyMDExMTM2MzBa
GA8yMTI2MTEwNzExMzYzMFowHjEcMBoGA1UEAwwTamFydmlzIHVuaXQtdGVzdCBD
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLYJuLjbvm+xsg708bZkDNu35Fcn
x5aCzgPSJ07UNy8OUPxKG6LAWHnE1hXnRf2s+1u9miPu8qRrpaSlkMrKmRWjUzBR
MB0GA1UdDgQWBBQXLvPDQRu57aSkMC+XKqztDAT2+TAfBgNVHSMEGDAWgBQXLvPD
QRu57aSkMC+XKqztDAT2+TAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCICP0D5AcYuFCbjpQHDFUDgYoArh5pKCAnj9tahu7afCVAiEAyZ951z/rIgFO
cUik2qmjny5qyRs4qvXcvMfYjSqu9Xw=
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgksas9PwPoNh6Gvo8
kIGAovqpNGAtq2SZ359cNlnuCK6hRANCAAS2Cbi4275vsbIO9PG2ZAzbt+RXJ8eW
gs4D0idO1DcvDlD8ShuiwFh5xNYV50X9rPtbvZoj7vKka6WkpZDKypkV
-----END PRIVATE KEY-----
";

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn system_ca() -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(TEST_CA.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn the_ca_file_is_trusted_beside_the_system_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = file(&dir, "ca.pem", TEST_CA);
        let files = ChatTls {
            ca_file: Some(&ca),
            ..ChatTls::default()
        };
        // The same certificate twice: both entries are kept, so the count shows that the
        // system's roots were not dropped for the file's.
        assert_eq!(files.roots_beside(system_ca()).unwrap().len(), 2);
        assert_eq!(files.roots_beside(Vec::new()).unwrap().len(), 1);
        assert_eq!(
            ChatTls::default().roots_beside(system_ca()).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_bad_ca_file_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = file(&dir, "empty.pem", "");
        for (path, wanted) in [(&missing, "ca_file "), (&empty, "holds no certificate")] {
            let files = ChatTls {
                ca_file: Some(path),
                ..ChatTls::default()
            };
            let e = files.roots_beside(system_ca()).unwrap_err();
            assert!(e.starts_with("ca_file ") && e.contains(wanted), "{e}");
        }
        assert_eq!(
            ChatTls::default().roots_beside(Vec::new()).unwrap_err(),
            "no CA certificates: the system has none; set ca_file"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = file(&dir, "cert.pem", TEST_CA);
        let key = file(&dir, "key.pem", TEST_KEY);
        let roots = || ChatTls::default().roots_beside(system_ca()).unwrap();
        let both = ChatTls {
            cert_file: Some(&cert),
            key_file: Some(&key),
            ..ChatTls::default()
        };
        assert!(both.check("chat.irc[0]").is_ok());
        assert!(both.client_config_with(roots()).is_ok());
        let alone = ChatTls {
            cert_file: Some(&cert),
            ..ChatTls::default()
        };
        assert_eq!(
            alone.check("chat.xmpp[0]").unwrap_err(),
            "chat.xmpp[0]: cert_file and key_file go together"
        );
        let wrong_key = ChatTls {
            cert_file: Some(&cert),
            key_file: Some(&cert),
            ..ChatTls::default()
        };
        let e = wrong_key.client_config_with(roots()).unwrap_err();
        assert!(e.starts_with("key_file "), "{e}");
    }
}
