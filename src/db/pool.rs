//! The connection pool ([`PgManager`], [`Pool`], [`Object`], [`get`]) and
//! what is found out about the path to the database: [`probe_pooling`] and pooler
//! detection, the `doctor` connection report, and how pooled connections send statements.

use anyhow::Result;

use super::settings::{DbSettings, PoolerSetting, SslMode};
use super::statements::{Conn, Statements};
use crate::error::AppError;

/// The connection pool of a command.
pub type Pool = deadpool::managed::Pool<PgManager>;
/// A connection taken from a [`Pool`] (dereferences to [`Conn`]).
pub type Object = deadpool::managed::Object<PgManager>;

/// Opens the pool's sessions with [`DbSettings::open`]; they send statements as
/// [`statements_for`] says.
pub struct PgManager {
    pub(super) settings: DbSettings,
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
        .simple_query(crate::sql!("db/connection_report"))
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
