//! Riding out a lost database connection: recognising it, reconnecting with backoff within
//! `--retry-window`, and `retry_db!` for statements that are safe to repeat.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{one_line, Shared};
use crate::db;
#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};

/// True when an error means the database connection was lost or cannot be made (as
/// opposed to an error of a statement): worth reconnecting and retrying.
pub(super) fn is_db_lost(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::error::AppError>(),
            Some(crate::error::AppError::Unavailable(_))
        ) || c
            .downcast_ref::<tokio_postgres::Error>()
            .map(crate::error::is_connection_error)
            .unwrap_or(false)
    })
}

/// After a lost connection: a working connection again, trying with backoff (100 ms
/// doubling to 2 s) until `--retry-window` has passed since `since`, when the invocation
/// gives up (exit 75). A server restart takes a few seconds; this rides it out.
pub(super) async fn reconnect(
    sh: &Shared<'_>,
    since: Instant,
    cause: &anyhow::Error,
) -> Result<db::Object> {
    let window = Duration::from_secs(sh.args.retry_window);
    tracing::warn!(
        error = %one_line(&format!("{cause:#}")),
        "lost the database connection; reconnecting (retrying for up to {} s, --retry-window)",
        window.as_secs()
    );
    let mut delay = Duration::from_millis(100);
    loop {
        if !sh.db_gone.load(Ordering::SeqCst) {
            if let Ok(conn) = db::get(&sh.pool, &sh.ctx.db).await {
                if conn.query_one(crate::sql!("db/ping"), &[]).await.is_ok() {
                    tracing::warn!(
                        "database connection back after {} ms",
                        since.elapsed().as_millis()
                    );
                    return Ok(conn);
                }
                let _ = db::Object::take(conn);
            }
        }
        if sh.db_gone.load(Ordering::SeqCst) || since.elapsed() + delay > window {
            sh.db_gone.store(true, Ordering::SeqCst);
            return Err(crate::error::AppError::Unavailable(format!(
                "lost the database connection and it did not come back within {} s (--retry-window)",
                window.as_secs()
            ))
            .into());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Run `$e` (which uses the connection `$conn`); when the connection was lost, reconnect
/// (within the retry window) into `$conn` and run it again. For statements that are safe to
/// repeat (reads, and the lease functions, which check what they change).
macro_rules! retry_db {
    ($sh:expr, $conn:ident, $e:expr) => {{
        let mut since: Option<Instant> = None;
        loop {
            let r: Result<_> = $e;
            match r {
                Err(err) if is_db_lost(&err) => {
                    let s = *since.get_or_insert_with(Instant::now);
                    let _ = db::Object::take($conn);
                    $conn = reconnect($sh, s, &err).await?;
                }
                other => break other,
            }
        }
    }};
}

/// A future that used `conn` was dropped mid-statement: cancel what may still run on the
/// server, and keep the connection out of the pool.
pub(super) async fn abandon(
    sh: &Shared<'_>,
    cancel: tokio_postgres::CancelToken,
    conn: db::Object,
) {
    sh.ctx.db.cancel(&cancel).await;
    let _ = db::Object::take(conn);
}
