//! TLS termination: a [`TlsAcceptor`] from PEM certificate and key files
//! (`--tls-cert`, `--tls-key`), with rustls and the `ring` crypto provider.
//!
//! Only loading lives here; [`crate::server::serve_tls`] runs the handshakes (bounded by
//! the header read timeout, so a client cannot hold a socket by stalling the handshake
//! either). No client certificates; HTTP/1.1 only (ALPN `http/1.1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM certificates from {}: {reason}", path.display())]
    Certificates { path: PathBuf, reason: String },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read a PEM private key from {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("the certificate and key cannot be used together")]
    Config(#[source] rustls::Error),
}

/// Builds the acceptor for the certificate chain in `cert` and the private key in `key`
/// (PKCS#8, PKCS#1 or SEC1 PEM).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Named explicitly: other dependencies may compile in a second provider, and then
    // rustls cannot pick a process default by itself.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            acceptor(&missing, &empty),
            Err(TlsError::Certificates { .. })
        ));
        assert!(matches!(
            acceptor(&empty, &empty),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
