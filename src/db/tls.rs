//! TLS with rustls: the connector for each sslmode, root certificates (a PEM file or the
//! system store), the verifiers of `require` (none) and `verify-ca` (chain only), and the
//! operator's reading of a rejected certificate.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::settings::{DbSettings, RootCert, SslMode};
use crate::error::AppError;

impl DbSettings {
    /// The TLS connector for this sslmode (unused by the driver when sslmode=disable).
    pub fn tls(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("configuring TLS")?;
        // As libpq: require without a root certificate does not verify; with one it
        // verifies the chain (like verify-ca).
        let mode = match (self.ssl_mode, &self.ssl_root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (m, _) => m,
        };
        let config = match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let source = self.ssl_root_cert.as_ref().ok_or_else(|| {
                    AppError::usage(format!(
                        "sslmode={} needs a root certificate: set sslrootcert in the URL or PGSSLROOTCERT (a file, or \"system\")",
                        if mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
                    ))
                })?;
                let roots = Arc::new(root_store(source)?);
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots,
                    provider.clone(),
                )
                .build()
                .context("building the certificate verifier")?;
                let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyCa {
                    Arc::new(ChainOnlyVerifier { inner: webpki })
                } else {
                    webpki
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerifier { provider }))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    /// What a rejected server certificate means for the operator, in their terms
    /// (rustls only says e.g. "UnknownIssuer").
    pub(super) fn tls_hint(&self, e: &tokio_postgres::Error) -> Option<String> {
        let root = || {
            self.ssl_root_cert
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "sslrootcert".to_string())
        };
        match rustls_error(e)? {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(format!(
                "the server's certificate is not signed by the CA in {}",
                root()
            )),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Some(
                "sslmode=verify-full: the server's certificate does not name the host connected to; \
                 connect by a name the certificate lists, or use sslmode=verify-ca"
                    .to_string(),
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => Some("the server's certificate has expired".to_string()),
            rustls::Error::InvalidCertificate(_) => {
                Some(format!("the server's certificate was rejected; check {}", root()))
            }
            _ => None,
        }
    }
}

/// The root certificates of `source`.
fn root_store(source: &RootCert) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match source {
        RootCert::File(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                AppError::usage(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    AppError::usage(format!("invalid certificate in {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    AppError::usage(format!("invalid certificate in {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(AppError::usage(format!(
                    "no certificate found in sslrootcert {}",
                    path.display()
                )));
            }
        }
        RootCert::System => {
            // The platform's store as OpenSSL (and so libpq) finds it, SSL_CERT_FILE and
            // SSL_CERT_DIR included.
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(AppError::usage(format!(
                    "sslrootcert=system: no trusted certificate found in the system trust store{}",
                    found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )));
            }
        }
    }
    Ok(roots)
}

/// The rustls error behind a failed handshake, if that is what failed (tokio-postgres-rustls
/// wraps it in an io::Error, whose `source()` skips it, hence `get_ref`).
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        source = s.source();
    }
    None
}

#[derive(Debug)]
struct NoVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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

/// verify-ca: the chain must lead to the root, the host name is not checked.
#[derive(Debug)]
struct ChainOnlyVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
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
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
