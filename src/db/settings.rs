//! Connection settings: libpq's sslmode, root certificate, target_session_attrs, the
//! pooler setting, the servers to try ([`Target`]), and [`DbSettings::resolve`], which
//! reads them from a URL or keyword=value string, the service file and the `PG*` variables.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Result;
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use super::conninfo::{
    add_host, default_host, env_nonempty, keyword_values, merge_config, parse_config,
    split_libpq_params, url_password, OURS,
};
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
    pub(super) fn as_str(self) -> &'static str {
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
/// found out by [`probe_pooling`](super::probe_pooling) where it matters (`auto`, the default) or said by the
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
    pub(super) base: Config,
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
    pub(super) passfile: Vec<crate::libpq::PassEntry>,
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
}
