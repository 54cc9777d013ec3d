//! Bounded waits (SPEC §1 "Deadlines"): no statement waits without bound, and none of the
//! bounds is session state (a transaction-mode pooler hands the session to others).
//!
//! Owns the two per-statement bounds and where they apply:
//! - inside a transaction, `SET LOCAL lock_timeout` and `SET LOCAL statement_timeout`,
//!   issued right after `BEGIN` (gone at COMMIT/ROLLBACK, so pooler-safe);
//! - outside a transaction (autocommit statements, `prepare`), a client-side timer: past the
//!   statement bound the statement is cancelled on the server (a cancel request, as psql's
//!   Ctrl-C) and its error ("canceling statement due to user request") is returned.
//!
//! Bounds come from `AUTOPILOT_LOCK_TIMEOUT` and `AUTOPILOT_STATEMENT_TIMEOUT` (seconds,
//! decimals allowed; defaults 10 and 60). A wait that ends this way is a temporary failure:
//! commands exit 75 (see [`crate::error::exit_code_for`]); a tenant's cycle ends `timeout`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::{CancelToken, Error as PgError};

use crate::error::AppError;

pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

static BOUNDS: OnceLock<Bounds> = OnceLock::new();
static CANCEL_TLS: OnceLock<tokio_postgres_rustls::MakeRustlsConnect> = OnceLock::new();

/// The bounds in force (the defaults until [`init`] ran).
pub fn bounds() -> Bounds {
    BOUNDS.get().copied().unwrap_or_default()
}

fn seconds(var: &str, default: Duration) -> anyhow::Result<Duration> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => {
            let secs: f64 = v.trim().parse().map_err(|_| {
                AppError::usage(format!("invalid {var} '{v}': expected seconds, e.g. 10"))
            })?;
            if !(0.1..=86_400.0).contains(&secs) {
                return Err(AppError::usage(format!(
                    "invalid {var} '{v}': must be between 0.1 and 86400 seconds"
                )));
            }
            Ok(Duration::from_secs_f64(secs))
        }
    }
}

/// Read the bounds from the environment (bad values are bad input, exit 2) and keep the TLS
/// connector cancel requests use.
pub fn init(db: &super::DbSettings) -> anyhow::Result<()> {
    let b = Bounds {
        lock_timeout: seconds("AUTOPILOT_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)?,
        statement_timeout: seconds("AUTOPILOT_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT)?,
    };
    let _ = BOUNDS.set(b);
    if let Ok(tls) = db.tls() {
        let _ = CANCEL_TLS.set(tls);
    }
    Ok(())
}

/// What a new transaction runs first: transaction-scoped bounds.
pub fn set_local_sql() -> String {
    let b = bounds();
    format!(
        "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'",
        b.lock_timeout.as_millis(),
        b.statement_timeout.as_millis()
    )
}

/// Send a cancel request for whatever runs on the connection of `token`.
pub async fn cancel(token: &CancelToken) {
    let sent = match CANCEL_TLS.get() {
        Some(tls) => token.cancel_query(tls.clone()).await,
        None => token.cancel_query(tokio_postgres::NoTls).await,
    };
    if let Err(e) = sent {
        tracing::warn!(error = %super::error_text(&e), "sending a cancel request failed");
    }
}

/// Run a statement outside a transaction with the statement bound: past it, cancel it on
/// the server and return its error (the connection stays usable).
pub async fn bounded<T>(
    token: CancelToken,
    fut: impl Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    let limit = bounds().statement_timeout;
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => return r,
        _ = tokio::time::sleep(limit) => {}
    }
    tracing::warn!(
        "a statement ran longer than {} s (AUTOPILOT_STATEMENT_TIMEOUT), most likely waiting for a lock another session holds: cancelling it",
        limit.as_secs_f64()
    );
    cancel(&token).await;
    // The server answers the cancel with an error at once; should it not (the cancel was
    // lost), the statement bound applies once more and the connection is given up.
    match tokio::time::timeout(limit, &mut fut).await {
        Ok(r) => r,
        Err(_) => {
            cancel(&token).await;
            fut.await
        }
    }
}

/// True when `err` is a bounded wait that ran out: a lock timeout (55P03), a statement
/// timeout or a cancel this module sent (57014).
pub fn is_timeout(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<PgError>()
            .and_then(|e| e.code())
            .map(|code| matches!(code.code(), "55P03" | "57014"))
            .unwrap_or(false)
    })
}
