//! Opening sessions as libpq does: per-target tokio-postgres settings, the walk over the
//! listed servers with `connect_timeout` and `target_session_attrs`, cancel requests, and
//! the constructors of the pool and of direct connections.

use anyhow::{Context, Result};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::Config;
use uuid::Uuid;

use super::errors::Attempt;
use super::pool::{PgManager, Pool};
use super::settings::{DbSettings, SessionAttrs, SslMode, Target};
use crate::error::{register_secret, AppError};

impl DbSettings {
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
