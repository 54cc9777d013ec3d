//! Connection settings: libpq's sslmode, root certificate, target_session_attrs, the
//! pooler setting, the servers to try ([`Target`]) and [`DbSettings`] itself (resolved from
//! the URL, the service file and the `PG*` variables in `resolve`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Result;
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::AppError;

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
    /// The user name sessions are opened as.
    pub fn user(&self) -> &str {
        self.base.get_user().unwrap_or("")
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.base.get_dbname().unwrap_or("")
    }
}
