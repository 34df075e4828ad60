//! TLS for the PostgreSQL connections, over rustls with the ring provider: the connector a
//! [`TlsMode`] asks for.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::{PgConfig, TlsMode};
use crate::log::LogError;

/// The rustls connector for `config`, or `None` for [`TlsMode::Disable`]. Verification
/// ([`TlsMode::VerifyFull`]) checks the chain against `sslrootcert` (a PEM file) or the
/// Mozilla roots, and the host name of the URL against the certificate.
pub(crate) fn connector(config: &PgConfig) -> Result<Option<MakeRustlsConnect>, LogError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| LogError::StoreConfig {
            store: config.redacted(),
            reason: format!("TLS set-up failed: {error}"),
        })?;
    let client_config = match config.tls() {
        TlsMode::Disable => return Ok(None),
        TlsMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match config.root_cert() {
                Some(path) => {
                    let unreadable = |reason: String| LogError::StoreConfig {
                        store: config.redacted(),
                        reason: format!("sslrootcert {}: {reason}", path.display()),
                    };
                    let certificates = CertificateDer::pem_file_iter(path)
                        .map_err(|error| unreadable(error.to_string()))?;
                    for certificate in certificates {
                        let certificate =
                            certificate.map_err(|error| unreadable(error.to_string()))?;
                        roots
                            .add(certificate)
                            .map_err(|error| unreadable(error.to_string()))?;
                    }
                    if roots.is_empty() {
                        return Err(unreadable("holds no PEM certificate".to_string()));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly { provider }))
            .with_no_client_auth(),
    };
    Ok(Some(MakeRustlsConnect::new(client_config)))
}

/// `sslmode=require` as libpq means it: encrypt, accept any certificate, but still check
/// that the server holds the key of the certificate it shows (the handshake signature).
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
