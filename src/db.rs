//! Database access: connection settings (URL or libpq PG* variables, sslmode and
//! sslrootcert parsed here because tokio-postgres knows neither verify-* nor root certs),
//! TLS with rustls, the connection pool, and the lease fence every cycle write passes.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, Error as PgError, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use crate::error::{register_secret, AppError};

/// libpq's sslmode values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(AppError::usage(format!(
                    "invalid sslmode '{other}' (expected disable, allow, prefer, require, verify-ca or verify-full)"
                )))
            }
        })
    }
}

/// Everything needed to open connections, parsed and validated up front.
#[derive(Clone)]
pub struct DbSettings {
    pub config: Config,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<PathBuf>,
    /// `user@host:port/db`, never with the password: for messages.
    pub display: String,
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("target", &self.display)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Split libpq-only parameters (sslmode, sslrootcert, …) out of a URL or key=value
/// connection string, returning the rest for tokio-postgres and the extracted pairs.
fn split_libpq_params(conn: &str) -> (String, Vec<(String, String)>) {
    const OURS: &[&str] = &[
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslpassword",
    ];
    let mut extracted = Vec::new();
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return (conn.to_string(), extracted);
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if OURS.contains(&k) {
                let v = percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .to_string();
                extracted.push((k.to_string(), v));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, extracted)
    } else {
        let mut kept = Vec::new();
        for token in conn.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) if OURS.contains(&k.trim()) => {
                    extracted.push((k.trim().to_string(), v.trim_matches('\'').to_string()))
                }
                _ => kept.push(token),
            }
        }
        (kept.join(" "), extracted)
    }
}

impl DbSettings {
    /// From `--database-url`/`DATABASE_URL` when given, else from the libpq variables.
    pub fn resolve(url: Option<&str>) -> Result<DbSettings> {
        let (mut config, params) = match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                if let Some(pw) = url_password(url) {
                    register_secret(&pw);
                }
                let (rest, params) = split_libpq_params(url);
                let config = Config::from_str(&rest).map_err(|e| {
                    AppError::usage(format!(
                        "invalid database URL: {}",
                        crate::error::redact(&e.to_string())
                    ))
                })?;
                (config, params)
            }
            None => {
                // libpq would quietly try localhost:5432; an agent that may write should
                // rather say that nothing told it where its database is.
                const PG_VARS: &[&str] = &[
                    "PGHOST",
                    "PGHOSTADDR",
                    "PGPORT",
                    "PGUSER",
                    "PGDATABASE",
                    "PGSERVICE",
                ];
                if !PG_VARS.iter().any(|v| env_nonempty(v).is_some()) {
                    return Err(AppError::usage(
                        "no database configured: set DATABASE_URL (or --database-url, or the libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE)",
                    ));
                }
                (Config::new(), Vec::new())
            }
        };

        // libpq fills what the connection string leaves out from the environment.
        if config.get_hosts().is_empty() {
            let hosts = env_nonempty("PGHOST").unwrap_or_else(|| "localhost".to_string());
            for h in hosts.split(',') {
                if h.starts_with('/') {
                    #[cfg(unix)]
                    config.host_path(h);
                } else {
                    config.host(h);
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(port) = env_nonempty("PGPORT") {
                let port: u16 = port
                    .parse()
                    .map_err(|_| AppError::usage(format!("invalid PGPORT '{port}'")))?;
                config.port(port);
            }
        }
        if config.get_user().is_none() {
            let user = env_nonempty("PGUSER")
                .or_else(|| env_nonempty("USER"))
                .unwrap_or_else(|| "postgres".to_string());
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(pw) = env_nonempty("PGPASSWORD") {
                config.password(pw.as_bytes());
            }
        }
        if let Some(pw) = config.get_password() {
            register_secret(&String::from_utf8_lossy(pw));
        }
        if config.get_dbname().is_none() {
            let db = env_nonempty("PGDATABASE")
                .unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_string());
            config.dbname(&db);
        }
        if config.get_connect_timeout().is_none() {
            let secs = env_nonempty("PGCONNECT_TIMEOUT")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .unwrap_or(10);
            config.connect_timeout(Duration::from_secs(secs));
        }
        if config.get_application_name().is_none() {
            config.application_name(
                env_nonempty("PGAPPNAME").unwrap_or_else(|| "autopilot".to_string()),
            );
        }
        config.keepalives(true);

        let param = |k: &str| {
            params
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let ssl_mode: SslMode = match param("sslmode").or_else(|| env_nonempty("PGSSLMODE")) {
            Some(m) => m.parse()?,
            None => SslMode::Prefer,
        };
        let mut ssl_root_cert = param("sslrootcert")
            .or_else(|| env_nonempty("PGSSLROOTCERT"))
            .map(PathBuf::from);
        if ssl_root_cert.is_none() {
            if let Some(home) = env_nonempty("HOME") {
                let default = PathBuf::from(home).join(".postgresql/root.crt");
                if default.exists() {
                    ssl_root_cert = Some(default);
                }
            }
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });

        let host = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let display = format!(
            "{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            host,
            port,
            config.get_dbname().unwrap_or("")
        );
        Ok(DbSettings {
            config,
            ssl_mode,
            ssl_root_cert,
            display,
        })
    }

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
                let path = self.ssl_root_cert.as_ref().ok_or_else(|| {
                    AppError::usage(format!(
                        "sslmode={} needs a root certificate: set sslrootcert in the URL or PGSSLROOTCERT",
                        if mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
                    ))
                })?;
                let pem = std::fs::read(path).map_err(|e| {
                    AppError::usage(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
                let mut roots = rustls::RootCertStore::empty();
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
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
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

    /// A pool of at most `size` connections.
    pub fn pool(&self, size: usize) -> Result<Pool> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size.max(1))
            .build()
            .context("building the connection pool")
    }

    /// One direct connection (used by `migrate`, which needs session-level locks).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let tls = self.tls()?;
        let (client, connection) = self
            .config
            .connect(tls)
            .await
            .map_err(|e| self.unavailable(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        Ok(client)
    }

    /// Map a connection failure to the exit-75 error, naming the target (never the password).
    pub fn unavailable(&self, e: &tokio_postgres::Error) -> anyhow::Error {
        // Any failure to establish the session (refused, timed out, TLS, authentication)
        // means the agent cannot reach its database this time: exit 75.
        let mut detail = crate::error::redact(&error_text(e));
        if let Some(hint) = self.tls_hint(e) {
            detail.push_str(" (");
            detail.push_str(&hint);
            detail.push(')');
        }
        AppError::Unavailable(format!(
            "cannot connect to database {}: {detail}",
            self.display
        ))
        .into()
    }

    /// What a rejected server certificate means for the operator, in their terms
    /// (rustls only says e.g. "UnknownIssuer").
    fn tls_hint(&self, e: &tokio_postgres::Error) -> Option<String> {
        let root = || {
            self.ssl_root_cert
                .as_ref()
                .map(|p| format!("sslrootcert {}", p.display()))
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

/// The password of a postgres:// URL, if any (to be redacted from messages).
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    Some(
        percent_encoding::percent_decode_str(pw)
            .decode_utf8_lossy()
            .to_string(),
    )
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

/// The error with its causes on one line.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Take a pooled connection, mapping failures to reach the server to exit 75.
pub async fn get(pool: &Pool, settings: &DbSettings) -> Result<deadpool_postgres::Object> {
    match pool.get().await {
        Ok(obj) => Ok(obj),
        Err(deadpool_postgres::PoolError::Backend(e)) => Err(settings.unavailable(&e)),
        Err(deadpool_postgres::PoolError::Timeout(_)) => Err(AppError::Unavailable(format!(
            "cannot connect to database {}: timed out",
            settings.display
        ))
        .into()),
        Err(e) => Err(AppError::Unavailable(format!(
            "cannot connect to database {}: {}",
            settings.display,
            crate::error::redact(&e.to_string())
        ))
        .into()),
    }
}

/// The first connection of a command: also checks that the schema is not behind this
/// binary (see [`crate::migrate::ensure_current`]).
pub async fn get_checked(pool: &Pool, settings: &DbSettings) -> Result<deadpool_postgres::Object> {
    let conn = get(pool, settings).await?;
    crate::migrate::ensure_current(&**conn).await?;
    Ok(conn)
}

/// SQLSTATE raised by `assert_tenant_lease` when a run lost its lease.
pub const LEASE_LOST_SQLSTATE: &str = "AP001";

/// A cycle's claim on its tenant: every write transaction of the cycle calls
/// [`Fence::check`] first, so nothing is written once the lease has been taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub tenant_id: Uuid,
    pub run_id: Uuid,
}

impl Fence {
    pub async fn check(&self, client: &impl Sql) -> Result<()> {
        match client
            .execute(
                "SELECT public.assert_tenant_lease($1, $2)",
                &[&self.tenant_id, &self.run_id],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_lease_lost(&e) => Err(AppError::LeaseLost(format!(
                "run {} no longer holds the lease of tenant {}",
                self.run_id, self.tenant_id
            ))
            .into()),
            Err(e) => Err(e).context("checking the tenant lease"),
        }
    }
}

/// Check the fence when there is one (cycle writes) and do nothing otherwise (commands).
pub async fn check_fence(fence: Option<&Fence>, client: &impl Sql) -> Result<()> {
    match fence {
        Some(f) => f.check(client).await,
        None => Ok(()),
    }
}

pub fn is_lease_lost(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .map(|d| d.code().code() == LEASE_LOST_SQLSTATE)
        .unwrap_or(false)
}

/// True when an anyhow error is (or wraps) a lost lease.
pub fn is_lease_lost_err(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(c.downcast_ref::<AppError>(), Some(AppError::LeaseLost(_)))
            || c.downcast_ref::<tokio_postgres::Error>()
                .map(is_lease_lost)
                .unwrap_or(false)
    })
}

/// Look up which of `ids` are tenants; an unknown id is bad input (exit 2).
pub async fn require_tenants(client: &impl Sql, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let rows = client
        .query("SELECT id FROM public.tenants WHERE id = ANY($1)", &[&ids])
        .await
        .context("looking up tenants")?;
    let found: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
        return Err(AppError::usage(format!("unknown tenant {missing}")));
    }
    Ok(())
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

// Statements -------------------------------------------------------------------------------

/// What the modules run their SQL on: a plain connection or transaction (one-off commands,
/// tests), or a pooled connection or one of its transactions, which prepares each statement
/// once per connection and reuses it (an hourly cycle runs the same few dozen statements for
/// every tenant). The method names match tokio-postgres's, so generic code reads the same.
pub trait Sql: Send + Sync {
    /// The prepared statement for `sql` (from the connection's cache when it has one).
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, PgError>> + Send;
    fn query_statement(
        &self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send;
    fn query_one_statement(
        &self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, PgError>> + Send;
    fn query_opt_statement(
        &self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send;
    fn execute_statement(
        &self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, PgError>> + Send;

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send {
        async move {
            self.query_statement(&self.statement(sql).await?, params)
                .await
        }
    }
    fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, PgError>> + Send {
        async move {
            self.query_one_statement(&self.statement(sql).await?, params)
                .await
        }
    }
    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send {
        async move {
            self.query_opt_statement(&self.statement(sql).await?, params)
                .await
        }
    }
    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, PgError>> + Send {
        async move {
            self.execute_statement(&self.statement(sql).await?, params)
                .await
        }
    }
}

/// A connection that can open a transaction whose statements are [`Sql`] too.
pub trait Begin: Sql {
    type Tx<'a>: Sql + Commit
    where
        Self: 'a;
    fn begin(&mut self) -> impl Future<Output = Result<Self::Tx<'_>, PgError>> + Send;
}

pub trait Commit {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send;
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send;
}

/// Implements the statement runners by delegating to tokio-postgres's own methods of the
/// type (or of what it dereferences to).
macro_rules! run_statements_with {
    ($target:ty) => {
        fn query_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send {
            <$target>::query(self, st, params)
        }
        fn query_one_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<Row, PgError>> + Send {
            <$target>::query_one(self, st, params)
        }
        fn query_opt_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send {
            <$target>::query_opt(self, st, params)
        }
        fn execute_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<u64, PgError>> + Send {
            <$target>::execute(self, st, params)
        }
    };
}

/// Outside a transaction: each statement (and its prepare) runs under the client-side
/// statement bound of [`crate::deadline::bounded`].
macro_rules! run_bounded_statements_with {
    ($target:ty) => {
        fn query_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send {
            crate::deadline::bounded(self.cancel_token(), <$target>::query(self, st, params))
        }
        fn query_one_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<Row, PgError>> + Send {
            crate::deadline::bounded(self.cancel_token(), <$target>::query_one(self, st, params))
        }
        fn query_opt_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send {
            crate::deadline::bounded(self.cancel_token(), <$target>::query_opt(self, st, params))
        }
        fn execute_statement(
            &self,
            st: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> impl Future<Output = Result<u64, PgError>> + Send {
            crate::deadline::bounded(self.cancel_token(), <$target>::execute(self, st, params))
        }
    };
}

impl Sql for tokio_postgres::Client {
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, PgError>> + Send {
        crate::deadline::bounded(
            self.cancel_token(),
            tokio_postgres::Client::prepare(self, sql),
        )
    }
    run_bounded_statements_with!(tokio_postgres::Client);
}

impl Sql for tokio_postgres::Transaction<'_> {
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, PgError>> + Send {
        tokio_postgres::Transaction::prepare(self, sql)
    }
    run_statements_with!(tokio_postgres::Transaction<'_>);
}

impl Sql for deadpool_postgres::ClientWrapper {
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, PgError>> + Send {
        crate::deadline::bounded(
            self.cancel_token(),
            deadpool_postgres::ClientWrapper::prepare_cached(self, sql),
        )
    }
    run_bounded_statements_with!(tokio_postgres::Client);
}

impl Sql for deadpool_postgres::Transaction<'_> {
    fn statement(&self, sql: &str) -> impl Future<Output = Result<Statement, PgError>> + Send {
        deadpool_postgres::Transaction::prepare_cached(self, sql)
    }
    run_statements_with!(tokio_postgres::Transaction<'_>);
}

// Every transaction starts with its bounds (SET LOCAL: pooler-safe, see crate::deadline).
impl Begin for tokio_postgres::Client {
    type Tx<'a> = tokio_postgres::Transaction<'a>;
    async fn begin(&mut self) -> Result<Self::Tx<'_>, PgError> {
        let tx = tokio_postgres::Client::transaction(self).await?;
        tx.batch_execute(&crate::deadline::set_local_sql()).await?;
        Ok(tx)
    }
}

impl Begin for deadpool_postgres::ClientWrapper {
    type Tx<'a> = deadpool_postgres::Transaction<'a>;
    async fn begin(&mut self) -> Result<Self::Tx<'_>, PgError> {
        let tx = deadpool_postgres::ClientWrapper::transaction(self).await?;
        tx.batch_execute(&crate::deadline::set_local_sql()).await?;
        Ok(tx)
    }
}

impl Commit for tokio_postgres::Transaction<'_> {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send {
        tokio_postgres::Transaction::commit(self)
    }
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send {
        tokio_postgres::Transaction::rollback(self)
    }
}

impl Commit for deadpool_postgres::Transaction<'_> {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send {
        deadpool_postgres::Transaction::commit(self)
    }
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send {
        deadpool_postgres::Transaction::rollback(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_only_parameters_are_split_out_of_a_url() {
        let (rest, params) = split_libpq_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.crt",
        );
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(
            params,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca.crt".to_string())
            ]
        );
    }

    #[test]
    fn password_is_found_in_a_url_for_redaction() {
        assert_eq!(
            url_password("postgres://u:s%40cret@h/db").as_deref(),
            Some("s@cret")
        );
        assert_eq!(url_password("postgres://u@h/db"), None);
    }
}
