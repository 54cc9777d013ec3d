//! Database access: connection settings (URL or libpq PG* variables, sslmode and
//! sslrootcert parsed here because tokio-postgres knows neither verify-* nor root certs),
//! TLS with rustls, the connection pool, and the lease fence every cycle write passes.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Config, Error as PgError, Row};
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

/// A root certificate source for verify-ca / verify-full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file (`sslrootcert=/path`, `PGSSLROOTCERT`, `~/.postgresql/root.crt`).
    File(PathBuf),
    /// The system's trust store (`sslrootcert=system`; libpq then requires verify-full).
    System,
}

impl std::fmt::Display for RootCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCert::File(p) => write!(f, "sslrootcert {}", p.display()),
            RootCert::System => write!(f, "the system trust store (sslrootcert=system)"),
        }
    }
}

/// libpq's target_session_attrs: which of the listed servers a connection may settle on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    Any,
    ReadWrite,
    ReadOnly,
    Primary,
    Standby,
    PreferStandby,
}

impl FromStr for SessionAttrs {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            other => {
                return Err(AppError::usage(format!(
                    "invalid target_session_attrs '{other}' (expected any, read-write, read-only, primary, standby or prefer-standby)"
                )))
            }
        })
    }
}

impl SessionAttrs {
    fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }
}

/// Whether the database is reached through a transaction-mode pooler (`AUTOPILOT_POOLER`):
/// found out by [`probe_pooling`] where it matters (`auto`, the default) or said by the
/// operator. `session` also lets pooled connections prepare and cache their statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerSetting {
    Auto,
    /// A transaction-mode pooler (server sessions shared between client connections).
    Transaction,
    /// A direct connection or a session-mode pooler (one server session per connection).
    Session,
}

impl FromStr for PoolerSetting {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => PoolerSetting::Auto,
            "transaction" => PoolerSetting::Transaction,
            "session" | "none" | "direct" => PoolerSetting::Session,
            other => {
                return Err(AppError::usage(format!(
                    "invalid AUTOPILOT_POOLER '{other}' (expected auto, transaction or session)"
                )))
            }
        })
    }
}

/// One server to try: a host name or address, or a Unix-socket directory, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
}

impl Target {
    pub fn is_socket(&self) -> bool {
        #[cfg(unix)]
        if let Host::Unix(_) = self.host {
            return true;
        }
        false
    }

    /// The host as libpq names it (a socket directory is its path).
    pub fn host_name(&self) -> String {
        match &self.host {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => p.display().to_string(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Host::Tcp(h) => write!(f, "{h}:{}", self.port),
            #[cfg(unix)]
            Host::Unix(p) => write!(f, "{}/.s.PGSQL.{}", p.display(), self.port),
        }
    }
}

/// Everything needed to open connections, parsed and validated up front.
#[derive(Clone)]
pub struct DbSettings {
    /// User, password, database, options, application name: everything but the servers.
    base: Config,
    /// The servers to try, in order.
    pub targets: Vec<Target>,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<RootCert>,
    pub session_attrs: SessionAttrs,
    /// Bound of each attempt to open a session (socket, TLS, startup, authentication);
    /// None waits without bound (`connect_timeout=0`, as libpq).
    pub connect_timeout: Option<Duration>,
    pub pooler: PoolerSetting,
    /// `load_balance_hosts=random`: try the servers in a random order (libpq 16).
    pub load_balance: bool,
    /// Password-file entries, read when no password is given.
    passfile: Vec<crate::libpq::PassEntry>,
    /// `user@host:port/db`, never with the password: for messages.
    pub display: String,
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("target", &self.display)
            .field("ssl_mode", &self.ssl_mode)
            .field("session_attrs", &self.session_attrs)
            .field("pooler", &self.pooler)
            .finish()
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Connection keywords that tokio-postgres does not know (or knows only in part), read
/// here instead.
const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslpassword",
    "service",
    "passfile",
    "target_session_attrs",
    "fallback_application_name",
    "load_balance_hosts",
];

/// Split a keyword=value connection string into its pairs (values quoted with '…' or
/// bare; `\` escapes the next character), as libpq reads it.
fn parse_keyword_values(conn: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(AppError::usage(format!(
                "invalid connection string: missing \"=\" after \"{key}\""
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c)
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(AppError::usage(
                            "invalid connection string: unterminated quoted string",
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// A keyword=value connection string of `pairs`, quoted for tokio-postgres.
fn keyword_values(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split libpq-only parameters (sslmode, sslrootcert, service, …) out of a URL or
/// keyword=value connection string, returning the rest for tokio-postgres and the
/// extracted pairs.
fn split_libpq_params(conn: &str) -> Result<(String, Vec<(String, String)>)> {
    let mut extracted = Vec::new();
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_string(), extracted));
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
        Ok((rest, extracted))
    } else {
        let (ours, kept): (Vec<_>, Vec<_>) = parse_keyword_values(conn)?
            .into_iter()
            .partition(|(k, _)| OURS.contains(&k.as_str()));
        Ok((keyword_values(&kept), ours))
    }
}

/// tokio-postgres's reading of a connection string, its errors as bad input.
fn parse_config(conn: &str) -> Result<Config> {
    Config::from_str(conn).map_err(|e| {
        AppError::usage(format!(
            "invalid connection settings: {}",
            crate::error::redact(&e.to_string())
        ))
    })
}

/// Fill what `config` leaves out from `from` (the service file's settings).
fn merge_config(config: &mut Config, from: &Config) {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        for h in from.get_hosts() {
            match h {
                Host::Tcp(h) => {
                    config.host(h);
                }
                #[cfg(unix)]
                Host::Unix(p) => {
                    config.host_path(p);
                }
            }
        }
        for a in from.get_hostaddrs() {
            config.hostaddr(*a);
        }
    }
    if config.get_ports().is_empty() {
        for p in from.get_ports() {
            config.port(*p);
        }
    }
    if config.get_user().is_none() {
        if let Some(u) = from.get_user() {
            config.user(u);
        }
    }
    if config.get_password().is_none() {
        if let Some(p) = from.get_password() {
            config.password(p);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(d) = from.get_dbname() {
            config.dbname(d);
        }
    }
    if config.get_options().is_none() {
        if let Some(o) = from.get_options() {
            config.options(o);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(a) = from.get_application_name() {
            config.application_name(a);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(t) = from.get_connect_timeout() {
            config.connect_timeout(*t);
        }
    }
}

/// A host of a list: a Unix-socket directory when it starts with `/`.
fn add_host(config: &mut Config, h: &str) {
    if h.starts_with('/') {
        #[cfg(unix)]
        config.host_path(h);
    } else {
        config.host(h);
    }
}

/// libpq's default server when none is named: its Unix-socket directory, where there is
/// one; else localhost.
fn default_host(port: u16) -> String {
    let debian = Path::new(crate::libpq::DEFAULT_SOCKET_DIR);
    if debian.is_dir() {
        return debian.display().to_string();
    }
    if Path::new(&format!("/tmp/.s.PGSQL.{port}")).exists() {
        return "/tmp".to_string();
    }
    "localhost".to_string()
}

impl DbSettings {
    /// From `--database-url`/`DATABASE_URL` (a URL or keyword=value string) when given,
    /// else from the libpq variables; with libpq's order: the connection string, then the
    /// service it names (`service=`, `PGSERVICE`), then the `PG*` variables, then defaults.
    pub fn resolve(url: Option<&str>) -> Result<DbSettings> {
        let (mut config, mut params) = match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                if let Some(pw) = url_password(url) {
                    register_secret(&pw);
                }
                let (rest, params) = split_libpq_params(url)?;
                (parse_config(&rest)?, params)
            }
            None => {
                // libpq would quietly try its default socket; an agent that may write
                // should rather say that nothing told it where its database is.
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
                        "no database configured: set DATABASE_URL (or --database-url, or the libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE, or PGSERVICE)",
                    ));
                }
                (Config::new(), Vec::new())
            }
        };
        if let Some(pw) = config.get_password() {
            register_secret(&String::from_utf8_lossy(pw));
        }
        let param = |params: &[(String, String)], k: &str| {
            params
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };

        // The service's settings come after the connection string's, before the PG* ones.
        if let Some(name) = param(&params, "service").or_else(|| env_nonempty("PGSERVICE")) {
            let entries = crate::libpq::service(&name)?;
            for (k, v) in &entries {
                if k == "password" {
                    register_secret(v);
                }
            }
            let (ours, theirs): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .partition(|(k, _)| OURS.contains(&k.as_str()));
            let from = parse_config(&keyword_values(&theirs))
                .map_err(|e| AppError::usage(format!("service \"{name}\": {e}")))?;
            merge_config(&mut config, &from);
            for (k, v) in ours {
                if param(&params, &k).is_none() {
                    params.push((k, v));
                }
            }
        }

        // libpq fills what is still missing from the environment.
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            if let Some(hosts) = env_nonempty("PGHOST") {
                for h in hosts.split(',') {
                    add_host(&mut config, h.trim());
                }
            }
            if let Some(addrs) = env_nonempty("PGHOSTADDR") {
                for a in addrs.split(',') {
                    let ip: IpAddr = a.trim().parse().map_err(|_| {
                        AppError::usage(format!("invalid PGHOSTADDR '{a}' (an IP address)"))
                    })?;
                    config.hostaddr(ip);
                }
            }
        }
        let mut ports: Vec<u16> = config.get_ports().to_vec();
        if ports.is_empty() {
            if let Some(list) = env_nonempty("PGPORT") {
                for p in list.split(',') {
                    let p = p.trim();
                    ports.push(if p.is_empty() {
                        5432
                    } else {
                        p.parse()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| AppError::usage(format!("invalid PGPORT '{p}'")))?
                    });
                }
            }
        }
        let mut hosts: Vec<Host> = config.get_hosts().to_vec();
        let hostaddrs: Vec<IpAddr> = config.get_hostaddrs().to_vec();
        if hosts.is_empty() && hostaddrs.is_empty() {
            let h = default_host(ports.first().copied().unwrap_or(5432));
            let mut c = Config::new();
            add_host(&mut c, &h);
            hosts = c.get_hosts().to_vec();
        }
        let n = hosts.len().max(hostaddrs.len());
        if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
            return Err(AppError::usage(format!(
                "could not match {} host names to {} hostaddr values",
                hosts.len(),
                hostaddrs.len()
            )));
        }
        if ports.len() > 1 && ports.len() != n {
            return Err(AppError::usage(format!(
                "could not match {} port numbers to {} hosts",
                ports.len(),
                n
            )));
        }
        let targets: Vec<Target> = (0..n)
            .map(|i| {
                let hostaddr = hostaddrs.get(i).copied();
                Target {
                    host: hosts.get(i).cloned().unwrap_or_else(|| {
                        Host::Tcp(hostaddr.map(|a| a.to_string()).unwrap_or_default())
                    }),
                    hostaddr,
                    port: ports.get(i).or(ports.first()).copied().unwrap_or(5432),
                }
            })
            .collect();

        let mut base = Config::new();
        let user = config
            .get_user()
            .map(str::to_string)
            .or_else(|| env_nonempty("PGUSER"))
            .or_else(|| env_nonempty("USER"))
            .unwrap_or_else(|| "postgres".to_string());
        base.user(&user);
        if let Some(pw) = config.get_password() {
            base.password(pw);
        } else if let Some(pw) = env_nonempty("PGPASSWORD") {
            register_secret(&pw);
            base.password(pw.as_bytes());
        }
        let dbname = config
            .get_dbname()
            .map(str::to_string)
            .or_else(|| env_nonempty("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        base.dbname(&dbname);
        if let Some(o) = config
            .get_options()
            .map(str::to_string)
            .or_else(|| env_nonempty("PGOPTIONS"))
        {
            base.options(&o);
        }
        base.application_name(
            config
                .get_application_name()
                .map(str::to_string)
                .or_else(|| env_nonempty("PGAPPNAME"))
                .or_else(|| param(&params, "fallback_application_name"))
                .unwrap_or_else(|| "autopilot".to_string()),
        );
        base.keepalives(true);

        let connect_timeout = match config.get_connect_timeout() {
            Some(t) => Some(*t),
            None => match env_nonempty("PGCONNECT_TIMEOUT") {
                Some(s) => {
                    let secs: i64 = s.trim().parse().map_err(|_| {
                        AppError::usage(format!("invalid PGCONNECT_TIMEOUT '{s}' (seconds)"))
                    })?;
                    (secs > 0).then(|| Duration::from_secs(secs as u64))
                }
                None => Some(Duration::from_secs(10)),
            },
        }
        // As libpq: a timeout under 2 s is taken as 2 s.
        .map(|t| t.max(Duration::from_secs(2)));

        let session_attrs = match param(&params, "target_session_attrs")
            .or_else(|| env_nonempty("PGTARGETSESSIONATTRS"))
        {
            Some(s) => s.parse()?,
            None => SessionAttrs::Any,
        };
        let load_balance = match param(&params, "load_balance_hosts")
            .or_else(|| env_nonempty("PGLOADBALANCEHOSTS"))
            .as_deref()
        {
            None | Some("disable") => false,
            Some("random") => true,
            Some(other) => {
                return Err(AppError::usage(format!(
                    "invalid load_balance_hosts '{other}' (expected disable or random)"
                )))
            }
        };
        let pooler = match env_nonempty("AUTOPILOT_POOLER") {
            Some(s) => s.parse()?,
            None => PoolerSetting::Auto,
        };

        let mut ssl_root_cert = param(&params, "sslrootcert")
            .or_else(|| env_nonempty("PGSSLROOTCERT"))
            .map(|p| {
                if p == "system" {
                    RootCert::System
                } else {
                    RootCert::File(PathBuf::from(p))
                }
            });
        let ssl_mode: SslMode = match param(&params, "sslmode")
            .or_else(|| env_nonempty("PGSSLMODE"))
        {
            Some(m) => {
                let mode: SslMode = m.parse()?;
                if ssl_root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
                    return Err(AppError::usage(format!(
                        "weak sslmode \"{m}\" may not be used with sslrootcert=system (use \"verify-full\")"
                    )));
                }
                mode
            }
            None if ssl_root_cert == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if ssl_root_cert.is_none() {
            if let Some(home) = env_nonempty("HOME") {
                let default = PathBuf::from(home).join(".postgresql/root.crt");
                if default.exists() {
                    ssl_root_cert = Some(RootCert::File(default));
                }
            }
        }

        let passfile = if base.get_password().is_none() {
            crate::libpq::passfile_path(param(&params, "passfile").as_deref())
                .map(|p| crate::libpq::read_passfile(&p))
                .unwrap_or_default()
        } else {
            Vec::new()
        };

        let hosts_text = targets
            .iter()
            .map(|t| t.host_name())
            .collect::<Vec<_>>()
            .join(",");
        let port = targets.first().map(|t| t.port).unwrap_or(5432);
        let display = format!("{user}@{hosts_text}:{port}/{dbname}");
        Ok(DbSettings {
            base,
            targets,
            ssl_mode,
            ssl_root_cert,
            session_attrs,
            connect_timeout,
            pooler,
            load_balance,
            passfile,
            display,
        })
    }

    /// The user name sessions are opened as.
    pub fn user(&self) -> &str {
        self.base.get_user().unwrap_or("")
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.base.get_dbname().unwrap_or("")
    }

    /// The tokio-postgres settings of one attempt on `target`.
    fn config_for(&self, target: &Target) -> Config {
        let mut c = self.base.clone();
        match &target.host {
            Host::Tcp(h) => {
                c.host(h);
            }
            #[cfg(unix)]
            Host::Unix(p) => {
                c.host_path(p);
            }
        }
        if let Some(a) = target.hostaddr {
            c.hostaddr(a);
        }
        c.port(target.port);
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        if c.get_password().is_none() {
            let host = match (&target.host, target.hostaddr) {
                (Host::Tcp(h), Some(a)) if h.is_empty() => a.to_string(),
                _ => target.host_name(),
            };
            if let Some(pw) = crate::libpq::lookup_password(
                &self.passfile,
                &host,
                target.port,
                self.dbname(),
                self.user(),
            ) {
                register_secret(&pw);
                c.password(pw.as_bytes());
            }
        }
        // No TLS over a Unix socket, as libpq.
        c.ssl_mode(match self.ssl_mode {
            _ if target.is_socket() => PgSslMode::Disable,
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        c
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

    /// Ask the server to cancel what the session of `token` runs (best effort): over TLS
    /// when the session used it, plain otherwise (a Unix-socket session never has TLS, and
    /// the TLS connector cannot even be set up for a socket path).
    pub async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        if let Ok(tls) = self.tls() {
            if token.cancel_query(tls).await.is_ok() {
                return;
            }
        }
        let _ = token.cancel_query(tokio_postgres::NoTls).await;
    }

    /// A pool of at most `size` connections.
    pub fn pool(&self, size: usize) -> Result<Pool> {
        // The TLS settings are checked here, before any connection is tried.
        self.tls()?;
        Pool::builder(PgManager {
            settings: self.clone(),
        })
        .max_size(size.max(1))
        .build()
        .context("building the connection pool")
    }

    /// One direct connection (used by `migrate`, which needs session-level locks).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        Ok(self.open().await?.0)
    }

    /// Open a session as libpq does: each server of the list in order (for
    /// `prefer-standby`, a standby first, then any), each attempt bounded by
    /// `connect_timeout` from the socket to the end of authentication; the first server
    /// that fits `target_session_attrs` wins. A refused login ends the search (as libpq):
    /// it is a configuration error (exit 2), not an outage.
    pub async fn open(&self) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        let (client, task, _) = self.open_target().await?;
        Ok((client, task))
    }

    /// [`DbSettings::open`], also saying which server of the list the session is on.
    pub async fn open_target(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>, &Target)> {
        let passes = match self.session_attrs {
            SessionAttrs::PreferStandby => vec![SessionAttrs::Standby, SessionAttrs::Any],
            other => vec![other],
        };
        let mut order: Vec<&Target> = self.targets.iter().collect();
        if self.load_balance {
            // Fisher-Yates with the operating system's randomness (a v4 UUID's bits).
            let mut bits = Uuid::new_v4().as_u128();
            for i in (1..order.len()).rev() {
                let j = (bits % (i as u128 + 1)) as usize;
                bits /= i as u128 + 1;
                order.swap(i, j);
            }
        }
        let mut failures: Vec<String> = Vec::new();
        for want in &passes {
            for target in order.iter().copied() {
                match self.open_one(target, *want).await {
                    Ok((client, task)) => return Ok((client, task, target)),
                    Err(Attempt::Fatal(e)) => return Err(e),
                    Err(Attempt::Pg(e)) => return Err(self.unavailable(&e)),
                    Err(Attempt::Failed(why)) => {
                        let line = if self.targets.len() > 1 || passes.len() > 1 {
                            format!("{target}: {why}")
                        } else {
                            why
                        };
                        if !failures.contains(&line) {
                            failures.push(line);
                        }
                    }
                }
            }
        }
        Err(AppError::Unavailable(format!(
            "cannot connect to database {}: {}",
            self.display,
            failures.join("; ")
        ))
        .into())
    }

    async fn open_one(
        &self,
        target: &Target,
        want: SessionAttrs,
    ) -> std::result::Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), Attempt> {
        let config = self.config_for(target);
        let attempt = async {
            let (client, task) = if target.is_socket() {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                (client, spawn_connection(conn))
            } else {
                let tls = self.tls().map_err(Attempt::Fatal)?;
                let (client, conn) = config.connect(tls).await?;
                (client, spawn_connection(conn))
            };
            if want != SessionAttrs::Any {
                if let Some(why) = session_mismatch(&client, want).await? {
                    task.abort();
                    return Err(Attempt::Failed(why));
                }
            }
            Ok((client, task))
        };
        match self.connect_timeout {
            None => attempt.await,
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(r) => r,
                Err(_) => Err(Attempt::Failed(format!(
                    "timeout expired: no session within connect_timeout of {} s",
                    limit.as_secs()
                ))),
            },
        }
        .map_err(|e| match e {
            Attempt::Pg(e) => self.classify(&e),
            other => other,
        })
    }

    /// A connection failure as an attempt outcome: a refused login or a missing password
    /// is final and bad configuration (exit 2), anything else lets the next server be tried.
    fn classify(&self, e: &tokio_postgres::Error) -> Attempt {
        let text = crate::error::redact(&error_text(e));
        let code = e.as_db_error().map(|d| d.code().code().to_string());
        if matches!(code.as_deref(), Some("28P01" | "28000")) {
            return Attempt::Fatal(AppError::usage(format!(
                "cannot connect to database {}: {text} (check the user name and password: DATABASE_URL, PGPASSWORD or the password file)",
                self.display
            )));
        }
        if text.contains("password missing") {
            return Attempt::Fatal(AppError::usage(format!(
                "cannot connect to database {}: the server asks for a password and none is configured (set it in DATABASE_URL, PGPASSWORD or the password file ~/.pgpass / PGPASSFILE)",
                self.display
            )));
        }
        let mut detail = text;
        if let Some(hint) = self.tls_hint(e) {
            detail.push_str(" (");
            detail.push_str(&hint);
            detail.push(')');
        }
        Attempt::Failed(detail)
    }

    /// Map a connection failure to the exit-75 error, naming the target (never the password).
    pub fn unavailable(&self, e: &tokio_postgres::Error) -> anyhow::Error {
        match self.classify(e) {
            Attempt::Fatal(e) => e,
            Attempt::Failed(detail) => AppError::Unavailable(format!(
                "cannot connect to database {}: {detail}",
                self.display
            ))
            .into(),
            Attempt::Pg(e) => AppError::Unavailable(format!(
                "cannot connect to database {}: {}",
                self.display,
                crate::error::redact(&error_text(&e))
            ))
            .into(),
        }
    }

    /// What a rejected server certificate means for the operator, in their terms
    /// (rustls only says e.g. "UnknownIssuer").
    fn tls_hint(&self, e: &tokio_postgres::Error) -> Option<String> {
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

/// How one attempt to open a session ended, when it did not succeed.
enum Attempt {
    /// Stop trying (bad configuration: exit 2).
    Fatal(anyhow::Error),
    /// Try the next server; why this one did not do.
    Failed(String),
    /// A driver error still to be classified.
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Self {
        Attempt::Pg(e)
    }
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %crate::error::redact(&e.to_string()), "database connection closed");
        }
    })
}

/// Why the server of `client` does not fit `want` (None when it does), as libpq decides:
/// read-write / read-only by `transaction_read_only`, primary / standby by recovery.
async fn session_mismatch(
    client: &tokio_postgres::Client,
    want: SessionAttrs,
) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    // A simple query: nothing prepared, so it works through any pooler.
    let rows = client
        .simple_query("SELECT pg_catalog.pg_is_in_recovery()::text, pg_catalog.current_setting('transaction_read_only')")
        .await?;
    let (recovery, read_only) = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0) == Some("true"), r.get(1) == Some("on")))
            }
            _ => None,
        })
        .unwrap_or((false, false));
    let why = match want {
        SessionAttrs::ReadWrite if read_only => Some("session is read-only"),
        SessionAttrs::ReadOnly if !read_only => Some("session is not read-only"),
        SessionAttrs::Primary if recovery => Some("server is in hot standby mode"),
        SessionAttrs::Standby | SessionAttrs::PreferStandby if !recovery => {
            Some("server is not in hot standby mode")
        }
        _ => None,
    };
    Ok(why.map(|w| format!("{w} (target_session_attrs={})", want.as_str())))
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
    crate::error::strip_row_contents(&text)
}

/// The connection pool of a command.
pub type Pool = deadpool::managed::Pool<PgManager>;
/// A connection taken from a [`Pool`] (dereferences to [`Conn`]).
pub type Object = deadpool::managed::Object<PgManager>;

/// Opens the pool's sessions with [`DbSettings::open`]; they send statements as
/// [`statements_for`] says.
pub struct PgManager {
    settings: DbSettings,
}

impl std::fmt::Debug for PgManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgManager")
            .field("settings", &self.settings)
            .finish()
    }
}

impl deadpool::managed::Manager for PgManager {
    type Type = Conn;
    type Error = anyhow::Error;

    async fn create(&self) -> Result<Conn> {
        let (client, task) = self.settings.open().await?;
        Ok(Conn::new(
            deadpool_postgres::ClientWrapper::new(client, task),
            statements_for(&self.settings),
        ))
    }

    async fn recycle(
        &self,
        conn: &mut Conn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<anyhow::Error> {
        if conn.is_closed() {
            return Err(deadpool::managed::RecycleError::message(
                "connection closed",
            ));
        }
        Ok(())
    }
}

/// Take a pooled connection, mapping failures to reach the server to exit 75 (and a
/// refused login to exit 2).
pub async fn get(pool: &Pool, settings: &DbSettings) -> Result<Object> {
    match pool.get().await {
        Ok(obj) => Ok(obj),
        Err(deadpool::managed::PoolError::Backend(e)) => Err(e),
        Err(deadpool::managed::PoolError::Timeout(_)) => Err(AppError::Unavailable(format!(
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
pub async fn get_checked(pool: &Pool, settings: &DbSettings) -> Result<Object> {
    let conn = get(pool, settings).await?;
    crate::migrate::ensure_current(&*conn).await?;
    Ok(conn)
}

// Poolers -----------------------------------------------------------------------------------

/// What [`probe_pooling`] found out about the path to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pooling {
    /// Server sessions are shared between client connections (a transaction- or
    /// statement-mode pooler): nothing may be kept in the session between transactions.
    Transaction {
        /// What proved it.
        evidence: String,
    },
    /// Each client connection kept its own server session (a direct connection or a
    /// session-mode pooler), as far as the probe could see.
    Session,
}

impl Pooling {
    pub fn is_transaction(&self) -> bool {
        matches!(self, Pooling::Transaction { .. })
    }
}

/// How many rounds [`probe_pooling`] tries before it concludes that sessions are not shared.
const PROBE_ROUNDS: usize = 4;

/// Find out whether the database is reached through a transaction-mode pooler: open two
/// client connections and ask each, in turn, for its server session's process id. With a
/// direct connection or a session-mode pooler each client connection keeps one server
/// session for its life, so the ids differ and never change; a transaction pooler hands
/// an idle server session to whichever client asks next, so either the second connection
/// lands on the first one's session or a connection's session changes between two
/// statements. Either observation is proof; none in a few rounds means session pooling.
/// Everything is sent as simple queries (nothing prepared), so the probe itself works
/// through any pooler.
pub async fn probe_pooling(settings: &DbSettings) -> Result<Pooling> {
    let (a, task_a) = settings.open().await?;
    let (b, task_b) = settings.open().await?;
    let result = async {
        let mut seen_a: Option<i32> = None;
        let mut seen_b: Option<i32> = None;
        for _ in 0..PROBE_ROUNDS {
            let pa = backend_pid(&a).await?;
            let pb = backend_pid(&b).await?;
            if pa == pb {
                return Ok(Pooling::Transaction {
                    evidence: format!(
                        "two client connections were served by the same server session (pid {pa})"
                    ),
                });
            }
            for (seen, now, which) in [(&mut seen_a, pa, "first"), (&mut seen_b, pb, "second")] {
                match *seen {
                    Some(before) if before != now => {
                        return Ok(Pooling::Transaction {
                            evidence: format!(
                                "the {which} client connection moved from server session {before} to {now} between two statements"
                            ),
                        })
                    }
                    _ => *seen = Some(now),
                }
            }
        }
        Ok(Pooling::Session)
    }
    .await;
    task_a.abort();
    task_b.abort();
    result.map_err(|e: tokio_postgres::Error| settings.unavailable(&e))
}

async fn backend_pid(
    c: &tokio_postgres::Client,
) -> std::result::Result<i32, tokio_postgres::Error> {
    let rows = c.simple_query("SELECT pg_catalog.pg_backend_pid()").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or(0))
}

/// Where and how a session is opened, for an operator (`autopilot doctor`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionReport {
    /// The server the session settled on: `host:port`, or `/dir/.s.PGSQL.port`.
    pub target: String,
    pub socket: bool,
    pub user: String,
    pub database: String,
    /// The sslmode in force (`disable` … `verify-full`; `disable` on a socket).
    pub ssl_mode: String,
    /// What the server certificate is checked against, when it is.
    pub ssl_root: Option<String>,
    /// The session is encrypted, as the server sees it (None behind a pooler, which sees
    /// its own link).
    pub encrypted: Option<bool>,
    /// `transaction`, `session` (direct or session pooling), as probed or set.
    pub pooling: String,
    /// How the probe decided, or that `AUTOPILOT_POOLER` said so.
    pub pooling_evidence: String,
    pub server_version: String,
    pub in_recovery: bool,
}

/// Open one session and describe it, and probe the pooling (see [`probe_pooling`]).
pub async fn connection_report(settings: &DbSettings) -> Result<ConnectionReport> {
    let (pooling, pooling_evidence) = match settings.pooler {
        PoolerSetting::Transaction => ("transaction", "AUTOPILOT_POOLER=transaction".to_string()),
        PoolerSetting::Session => ("session", "AUTOPILOT_POOLER=session".to_string()),
        PoolerSetting::Auto => match probe_pooling(settings).await? {
            Pooling::Transaction { evidence } => ("transaction", evidence),
            Pooling::Session => (
                "session",
                "each client connection kept its own server session".to_string(),
            ),
        },
    };
    let (client, task, target) = settings.open_target().await?;
    let rows = client
        .simple_query(
            "SELECT pg_catalog.current_setting('server_version'), pg_catalog.pg_is_in_recovery()::text,
                    (SELECT ssl::text FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid())",
        )
        .await
        .map_err(|e| settings.unavailable(&e));
    task.abort();
    let rows = rows?;
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some((
            r.get(0).unwrap_or("").to_string(),
            r.get(1) == Some("true"),
            r.get(2).map(|v| v == "true"),
        )),
        _ => None,
    });
    let (server_version, in_recovery, encrypted) = row.unwrap_or_default();
    let ssl_mode = if target.is_socket() {
        "disable"
    } else {
        match settings.ssl_mode {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    };
    let verifies = matches!(ssl_mode, "require" | "verify-ca" | "verify-full");
    Ok(ConnectionReport {
        target: target.to_string(),
        socket: target.is_socket(),
        user: settings.user().to_string(),
        database: settings.dbname().to_string(),
        ssl_mode: ssl_mode.to_string(),
        ssl_root: settings
            .ssl_root_cert
            .as_ref()
            .filter(|_| verifies)
            .map(|r| r.to_string()),
        encrypted: if pooling == "transaction" {
            None
        } else {
            encrypted
        },
        pooling: pooling.to_string(),
        pooling_evidence,
        server_version,
        in_recovery,
    })
}

/// Whether the database is behind a transaction pooler: `AUTOPILOT_POOLER` when the
/// operator said, else [`probe_pooling`].
pub async fn behind_transaction_pooler(settings: &DbSettings) -> Result<bool> {
    Ok(match settings.pooler {
        PoolerSetting::Transaction => true,
        PoolerSetting::Session => false,
        PoolerSetting::Auto => probe_pooling(settings).await?.is_transaction(),
    })
}

/// How the pooled connections of `settings` send statements: unnamed unless the operator
/// said the connection is direct or session-pooled (`AUTOPILOT_POOLER=session`). Measured
/// (`make bench` at small scale, and 30 interleaved idle runs): unnamed statements cost
/// nothing measurable against prepared-and-cached ones, while probing the path at every
/// start would cost two more sessions (~55 ms of a ~35 ms idle run), so only `migrate`
/// (which must refuse a transaction pooler) and `doctor` probe.
pub fn statements_for(settings: &DbSettings) -> Statements {
    match settings.pooler {
        PoolerSetting::Session => Statements::Prepared,
        PoolerSetting::Auto | PoolerSetting::Transaction => Statements::Unnamed,
    }
}

/// Stop (exit 2, before anything is changed) when the database is reached through a
/// transaction-mode pooler: `migrate` holds a session advisory lock for its whole run,
/// which such a pooler cannot keep.
pub async fn require_session_connection(settings: &DbSettings) -> Result<()> {
    let evidence = match settings.pooler {
        PoolerSetting::Session => return Ok(()),
        PoolerSetting::Transaction => "AUTOPILOT_POOLER=transaction".to_string(),
        PoolerSetting::Auto => match probe_pooling(settings).await? {
            Pooling::Session => return Ok(()),
            Pooling::Transaction { evidence } => evidence,
        },
    };
    let port = settings.targets.first().map(|t| t.port).unwrap_or(5432);
    let direct = if port == 6543 {
        "port 5432 (Supabase: the session pooler or the direct connection; 6543 is the transaction pooler)".to_string()
    } else {
        "the database's own port (usually 5432) or the pooler's session mode (Supabase: port 5432, not 6543)".to_string()
    };
    Err(AppError::usage(format!(
        "migrate needs a direct or session-mode connection, but {} (port {port}) is a transaction-mode pooler ({evidence}); nothing was changed: run migrate against {direct}",
        settings.display
    )))
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

/// A statement parameter: a value tokio-postgres can encode, and the PostgreSQL type it is
/// sent as. An unnamed statement (Parse, Bind, Execute in one round trip, nothing kept on
/// the server) must name its parameters' types up front, as the server has not described
/// them: the type here is the one the server inferred when the statement was prepared, so
/// the same SQL means the same thing on both paths.
pub trait Param: ToSql + Sync {
    /// The PostgreSQL type this value is sent as.
    fn param_type(&self) -> Type;
    /// The value as tokio-postgres's parameter type.
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

/// A Rust type with one PostgreSQL type (and its array type), for [`Param`] of the type
/// itself, of `Option`s (NULL of that type) and of vectors and slices (arrays).
pub trait PgTyped {
    const TYPE: Type;
    const ARRAY: Type;
}

macro_rules! pg_typed {
    ($($t:ty => $ty:ident, $arr:ident;)*) => {$(
        impl PgTyped for $t {
            const TYPE: Type = Type::$ty;
            const ARRAY: Type = Type::$arr;
        }
        impl Param for $t {
            fn param_type(&self) -> Type {
                Type::$ty
            }
            fn as_sql(&self) -> &(dyn ToSql + Sync) {
                self
            }
        }
    )*};
}

pg_typed! {
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f32 => FLOAT4, FLOAT4_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    String => TEXT, TEXT_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    Uuid => UUID, UUID_ARRAY;
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    chrono::NaiveDate => DATE, DATE_ARRAY;
    serde_json::Value => JSONB, JSONB_ARRAY;
    rust_decimal::Decimal => NUMERIC, NUMERIC_ARRAY;
}

impl<T: PgTyped> PgTyped for Option<T> {
    const TYPE: Type = T::TYPE;
    const ARRAY: Type = T::ARRAY;
}

impl<T: PgTyped + ToSql + Sync> Param for Option<T> {
    fn param_type(&self) -> Type {
        T::TYPE
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: PgTyped + ToSql + Sync> Param for Vec<T> {
    fn param_type(&self) -> Type {
        T::ARRAY
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: PgTyped + ToSql + Sync> Param for &[T] {
    fn param_type(&self) -> Type {
        T::ARRAY
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: PgTyped + ToSql + Sync> Param for Option<Vec<T>> {
    fn param_type(&self) -> Type {
        T::ARRAY
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

impl<T: Param> Param for &T {
    fn param_type(&self) -> Type {
        (**self).param_type()
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        (**self).as_sql()
    }
}

/// How a connection sends statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Named prepared statements, prepared once per connection and cached: only where the
    /// server session belongs to this connection for its whole life (direct or session
    /// pooling).
    Prepared,
    /// Unnamed statements, nothing kept on the server between round trips: works through a
    /// transaction-mode pooler without prepared-statement support.
    Unnamed,
}

fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (p.as_sql(), p.param_type()))
        .collect()
}

fn untyped<'a>(params: &'a [&'a dyn Param]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_sql()).collect()
}

/// What the modules run their SQL on: a plain connection or transaction (one-off commands,
/// tests), or a pooled connection ([`Conn`]) or one of its transactions ([`Tx`]). Plain
/// connections always send unnamed statements; pooled ones too, unless told the server
/// session is theirs for life (`AUTOPILOT_POOLER=session`, see [`statements_for`]): then
/// they prepare each statement once per connection and reuse it. Nothing is kept on the
/// server between transactions otherwise, so every command works through a
/// transaction-mode pooler. The method names match tokio-postgres's, so generic code reads
/// the same.
pub trait Sql: Send + Sync {
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send;
    fn query_one(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Row, PgError>> + Send;
    fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send;
    fn execute(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<u64, PgError>> + Send;
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

/// Implements [`Sql`] with unnamed statements on a tokio-postgres client or transaction.
macro_rules! unnamed_sql {
    ($target:ty) => {
        impl Sql for $target {
            async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
                <$target>::query_typed(self, sql, &typed(params)).await
            }
            async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
                <$target>::query_typed_one(self, sql, &typed(params)).await
            }
            async fn query_opt(
                &self,
                sql: &str,
                params: &[&dyn Param],
            ) -> Result<Option<Row>, PgError> {
                <$target>::query_typed_opt(self, sql, &typed(params)).await
            }
            async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
                <$target>::execute_typed(self, sql, &typed(params)).await
            }
        }
    };
}

/// Outside a transaction every statement runs under the client-side statement bound of
/// [`crate::deadline::bounded`]; inside one, `SET LOCAL` bounds it (see [`Begin`]).
impl Sql for tokio_postgres::Client {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        crate::deadline::bounded(self.cancel_token(), self.query_typed(sql, &typed(params))).await
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        crate::deadline::bounded(
            self.cancel_token(),
            self.query_typed_one(sql, &typed(params)),
        )
        .await
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        crate::deadline::bounded(
            self.cancel_token(),
            self.query_typed_opt(sql, &typed(params)),
        )
        .await
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        crate::deadline::bounded(self.cancel_token(), self.execute_typed(sql, &typed(params))).await
    }
}
unnamed_sql!(tokio_postgres::Transaction<'_>);

/// The client under a pooled connection, reached past [`Conn`] (`&**conn`): unnamed
/// statements, safe whatever the pooler.
impl Sql for deadpool_postgres::ClientWrapper {
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send {
        Sql::query(&**self, sql, params)
    }
    fn query_one(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Row, PgError>> + Send {
        Sql::query_one(&**self, sql, params)
    }
    fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send {
        Sql::query_opt(&**self, sql, params)
    }
    fn execute(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<u64, PgError>> + Send {
        Sql::execute(&**self, sql, params)
    }
}

/// A pooled connection: the client, its statement cache, and how it sends statements.
pub struct Conn {
    client: deadpool_postgres::ClientWrapper,
    statements: Statements,
}

impl Conn {
    pub fn new(client: deadpool_postgres::ClientWrapper, statements: Statements) -> Conn {
        Conn { client, statements }
    }

    /// How this connection sends statements.
    pub fn statements(&self) -> Statements {
        self.statements
    }

    /// A transaction whose statements are sent the way the connection's are.
    pub async fn transaction(&mut self) -> Result<Tx<'_>, PgError> {
        let statements = self.statements;
        let tx = self.client.transaction().await?;
        // Every transaction starts with its bounds (SET LOCAL: pooler-safe, see
        // crate::deadline).
        tx.batch_execute(&crate::deadline::set_local_sql()).await?;
        Ok(Tx { tx, statements })
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// A transaction of a pooled connection ([`Conn::transaction`]).
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    statements: Statements,
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), PgError> {
        self.tx.commit().await
    }
    pub async fn rollback(self) -> Result<(), PgError> {
        self.tx.rollback().await
    }
}

/// Implements [`Sql`] for a pooled connection or transaction: cached prepared statements or
/// unnamed ones, as the connection says.
macro_rules! pooled_sql {
    ($target:ty, $inner:ident) => {
        impl Sql for $target {
            async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.query_typed(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).query(&st, &untyped(params)).await
                    }
                }
            }
            async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.query_typed_one(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).query_one(&st, &untyped(params)).await
                    }
                }
            }
            async fn query_opt(
                &self,
                sql: &str,
                params: &[&dyn Param],
            ) -> Result<Option<Row>, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.query_typed_opt(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).query_opt(&st, &untyped(params)).await
                    }
                }
            }
            async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.execute_typed(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).execute(&st, &untyped(params)).await
                    }
                }
            }
        }
    };
}

pooled_sql!(Tx<'_>, tx);

/// The statements of [`Conn`] outside a transaction, before the client-side bound.
struct PooledStatements<'a> {
    client: &'a deadpool_postgres::ClientWrapper,
    statements: Statements,
}

impl Sql for PooledStatements<'_> {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.query_typed(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::query(self.client, &st, &untyped(params)).await
            }
        }
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.query_typed_one(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::query_one(self.client, &st, &untyped(params)).await
            }
        }
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.query_typed_opt(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::query_opt(self.client, &st, &untyped(params)).await
            }
        }
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.execute_typed(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::execute(self.client, &st, &untyped(params)).await
            }
        }
    }
}

impl Conn {
    fn unbounded(&self) -> PooledStatements<'_> {
        PooledStatements {
            client: &self.client,
            statements: self.statements,
        }
    }
}

/// Outside a transaction every statement runs under the client-side statement bound of
/// [`crate::deadline::bounded`].
impl Sql for Conn {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        crate::deadline::bounded(self.cancel_token(), self.unbounded().query(sql, params)).await
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        crate::deadline::bounded(self.cancel_token(), self.unbounded().query_one(sql, params)).await
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        crate::deadline::bounded(self.cancel_token(), self.unbounded().query_opt(sql, params)).await
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        crate::deadline::bounded(self.cancel_token(), self.unbounded().execute(sql, params)).await
    }
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

impl Begin for Conn {
    type Tx<'a> = Tx<'a>;
    fn begin(&mut self) -> impl Future<Output = Result<Self::Tx<'_>, PgError>> + Send {
        self.transaction()
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

impl Commit for Tx<'_> {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send {
        Tx::commit(self)
    }
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send {
        Tx::rollback(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_only_parameters_are_split_out_of_a_url() {
        let (rest, params) = split_libpq_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.crt",
        )
        .unwrap();
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
    fn keyword_value_strings_keep_quoted_values_whole() {
        let (rest, params) = split_libpq_params(
            "host=/tmp port = 5 options='-c a=b -c x=\\'y\\'' service=crm user=u\\ v",
        )
        .unwrap();
        assert_eq!(params, vec![("service".to_string(), "crm".to_string())]);
        let c = Config::from_str(&rest).unwrap();
        assert_eq!(c.get_options(), Some("-c a=b -c x='y'"));
        assert_eq!(c.get_user(), Some("u v"));
        assert_eq!(c.get_ports(), &[5]);
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
