//! The relay's TLS trust store: the system's CA bundle (`SSL_CERT_FILE`, else the
//! distribution's; the compiled-in Mozilla roots when the machine has none) plus
//! `SMTP_CA_FILE`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// Where the system's CA bundle lives on common distributions (Debian/Ubuntu, RHEL/Fedora,
/// SUSE, Alpine), in the order OpenSSL-based tools find them.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        certs.push(cert.map_err(|e| format!("invalid certificate in {}: {e}", path.display()))?);
    }
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// Where the trusted roots come from (for logs and `doctor`).
#[derive(Debug, Clone, Default)]
pub struct TrustSources {
    /// The system bundle used (`SSL_CERT_FILE` or a distribution path), if any.
    pub system_bundle: Option<PathBuf>,
    /// True when no system bundle exists and the compiled-in Mozilla roots are used.
    pub compiled_roots: bool,
    /// `SMTP_CA_FILE`, trusted in addition.
    pub extra_ca_file: Option<PathBuf>,
}

/// The rustls configuration for the relay: system roots (or the compiled-in ones when the
/// machine has none) plus `extra_ca_file`. `ssl_cert_file` replaces the distribution bundle,
/// as for OpenSSL. A named file that cannot be read or holds no certificate is an error
/// naming it.
pub fn tls_config(
    ssl_cert_file: Option<&Path>,
    extra_ca_file: Option<&Path>,
) -> Result<(Arc<rustls::ClientConfig>, TrustSources), String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut sources = TrustSources::default();
    let system = match ssl_cert_file {
        Some(p) => Some((
            p.to_path_buf(),
            read_pem_certs(p).map_err(|e| format!("SSL_CERT_FILE: {e}"))?,
        )),
        None => SYSTEM_BUNDLES
            .iter()
            .map(Path::new)
            .filter(|p| p.is_file())
            .find_map(|p| read_pem_certs(p).ok().map(|c| (p.to_path_buf(), c))),
    };
    match system {
        Some((path, certs)) => {
            // A bundle may hold a certificate rustls cannot parse; the others still count.
            let (_added, _ignored) = roots.add_parsable_certificates(certs);
            sources.system_bundle = Some(path);
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            sources.compiled_roots = true;
        }
    }
    if let Some(p) = extra_ca_file {
        for cert in read_pem_certs(p).map_err(|e| format!("SMTP_CA_FILE: {e}"))? {
            roots.add(cert).map_err(|e| {
                format!(
                    "SMTP_CA_FILE: invalid CA certificate in {}: {e}",
                    p.display()
                )
            })?;
        }
        sources.extra_ca_file = Some(p.to_path_buf());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(config), sources))
}
