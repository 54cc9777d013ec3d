//! One tenant's run under its lease (SPEC section 3): skip what must not start, take the
//! lease (`lease`), run the cycle watched by the tenant's limit, the lease and the signals,
//! then release with the outcome; a lost connection is retried within the retry window.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tokio::sync::Notify;

use super::lease::{acquire, release, Acquired, Ending, Limit};
use super::phases::tenant_cycle;
use super::report::{log_outcome, result, CycleMetrics, TenantResult};
use super::retry::{abandon, is_db_lost, reconnect};
use super::{one_line, Shared, TenantRow};
use crate::alerts;
use crate::db::{self, Fence};
use crate::settings::TenantSettings;

pub(super) async fn run_tenant(sh: &Shared<'_>, t: &TenantRow) -> TenantResult {
    let started = Instant::now();
    if *sh.stop.borrow() {
        return result(
            t,
            started,
            "skipped",
            Some("interrupted before start".into()),
        );
    }
    if sh.db_gone.load(Ordering::SeqCst) {
        return result(
            t,
            started,
            "skipped",
            Some("database unreachable: left for the next run".into()),
        );
    }
    if Instant::now() >= sh.deadline_at {
        return result(
            t,
            started,
            "skipped",
            Some(format!(
                "the invocation's --deadline of {} s passed before this tenant started",
                sh.args.deadline
            )),
        );
    }
    if let Some(why) = t.runnable {
        return result(t, started, "skipped", Some(why.into()));
    }
    let r = match run_tenant_inner(sh, t, started).await {
        Ok(r) => r,
        // A database that went away and did not come back is not this tenant's failure:
        // its run (if any) is left to the lease expiry and the next invocation.
        Err(e) if is_db_lost(&e) => {
            sh.db_gone.store(true, Ordering::SeqCst);
            result(
                t,
                started,
                "skipped",
                Some("database unreachable: left for the next run".into()),
            )
        }
        Err(e) => {
            let msg = one_line(&format!("{e:#}"));
            tracing::error!(tenant = %t.id, error = %msg, "tenant cycle failed");
            result(t, started, "failed", Some(msg))
        }
    };
    log_outcome(&r);
    r
}

async fn run_tenant_inner(
    sh: &Shared<'_>,
    t: &TenantRow,
    started: Instant,
) -> Result<TenantResult> {
    let conn = pooled(sh).await?;
    let limit = Limit::new(sh, started);
    let (conn, run_id, cycle_number) = match acquire(sh, t, conn, &limit, started).await? {
        Acquired::Run {
            conn,
            run_id,
            cycle_number,
        } => (conn, run_id, cycle_number),
        Acquired::Not(r) => return Ok(r),
    };
    tracing::Span::current().record("run_id", tracing::field::display(run_id));
    tracing::debug!(cycle_number, "lease taken");
    let fence = Fence {
        tenant_id: t.id,
        run_id,
    };
    // The heartbeat wakes this when the lease is lost.
    let lost = Arc::new(Notify::new());
    if let Ok(mut l) = sh.leases.lock() {
        l.insert(run_id, (t.id, lost.clone()));
    }
    let (conn, ending) = under_lease(sh, t, conn, fence, cycle_number, &limit, lost).await?;
    if let Ok(mut l) = sh.leases.lock() {
        l.remove(&run_id);
    }
    let (_conn, outcome) = release(sh, t, conn, run_id, &ending).await?;
    let Some((status, reason)) = outcome else {
        // The server lost the run in a crash (its commit was not yet durable, e.g.
        // synchronous_commit = off): nothing of it survived; the next run does the work.
        return Ok(result(
            t,
            started,
            "skipped",
            Some("the database lost this run in a crash; left for the next run".into()),
        ));
    };
    Ok(TenantResult {
        tenant_id: t.id,
        name: t.name.clone(),
        run_id: Some(run_id),
        cycle_number: Some(cycle_number),
        status,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
        metrics: match ending {
            Ending::Done(m) => m,
            _ => CycleMetrics::default(),
        },
    })
}

/// A pooled connection, reconnecting within the retry window when the database is gone.
pub(super) async fn pooled(sh: &Shared<'_>) -> Result<db::Object> {
    match db::get(&sh.pool, &sh.ctx.db).await {
        Ok(c) => Ok(c),
        Err(e) if is_db_lost(&e) => reconnect(sh, Instant::now(), &e).await,
        Err(e) => Err(e),
    }
}

/// The tenant's cycle under its lease; bad settings fail the run (with an alert) and the
/// other tenants go on.
async fn under_lease(
    sh: &Shared<'_>,
    t: &TenantRow,
    mut conn: db::Object,
    fence: Fence,
    cycle_number: i32,
    limit: &Limit,
    lost: Arc<Notify>,
) -> Result<(db::Object, Ending)> {
    let now = sh.ctx.now();
    let settings = match t.settings.clone().and_then(|v| TenantSettings::parse(&v)) {
        Ok(settings) => settings,
        Err(e) => {
            let msg = e.to_string();
            retry_db!(
                sh,
                conn,
                alerts::raise(
                    &*conn,
                    t.id,
                    alerts::INVALID_SETTINGS,
                    "critical",
                    &format!("agent not run: {msg}"),
                    json!({"key": e.key, "problem": e.problem}),
                    now,
                )
                .await
                .map(|_| ())
            )?;
            return Ok((conn, Ending::Failed(msg)));
        }
    };
    // A lost connection re-runs the cycle on a new one, under the same run and lease: every
    // step checks what exists (cards, clocks, sends already claimed), so what completed
    // before the loss is not done twice.
    let mut lost_since: Option<Instant> = None;
    loop {
        let cancel = conn.cancel_token();
        let work = tenant_cycle(&mut *conn, sh, t, fence, &settings, cycle_number, now);
        let ending = watch_cycle(sh, work, limit, &lost).await;
        match ending {
            Ending::Done(m) => return Ok((conn, Ending::Done(m))),
            Ending::DbLost(e) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                let _ = db::Object::take(conn);
                conn = reconnect(sh, since, &e).await?;
            }
            other => {
                abandon(sh, cancel, conn).await;
                return Ok((pooled(sh).await?, other));
            }
        }
    }
}

/// Run the cycle until it ends, the tenant's limit passes, the lease is lost, or a signal
/// interrupts it (after the grace, or at once on a second signal).
async fn watch_cycle(
    sh: &Shared<'_>,
    work: impl std::future::Future<Output = Result<CycleMetrics>>,
    limit: &Limit,
    lost: &Notify,
) -> Ending {
    let mut stop = sh.stop.clone();
    let mut stop_now = sh.stop_now.clone();
    let grace = Duration::from_secs(sh.args.grace);
    let interrupted = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::select! {
            _ = tokio::time::sleep(grace) => {},
            _ = stop_now.wait_for(|s| *s) => {},
        }
    };
    tokio::select! {
        r = tokio::time::timeout_at(limit.at.into(), work) => match r {
            Ok(Ok(m)) => Ending::Done(m),
            Ok(Err(e)) if db::is_lease_lost_err(&e) => Ending::Lost,
            Ok(Err(e)) if is_db_lost(&e) => Ending::DbLost(e),
            Ok(Err(e)) if db::deadline::is_timeout(&e) => {
                let b = db::deadline::bounds();
                Ending::TimedOut(format!(
                    "a database wait passed its bound (lock_timeout {} s, statement_timeout {} s): {}",
                    b.lock_timeout.as_secs_f64(),
                    b.statement_timeout.as_secs_f64(),
                    one_line(&format!("{e:#}"))
                ))
            }
            Ok(Err(e)) => Ending::Failed(one_line(&format!("{e:#}"))),
            Err(_) => Ending::TimedOut(limit.reason()),
        },
        _ = lost.notified() => Ending::Lost,
        _ = interrupted => Ending::Interrupted,
    }
}
