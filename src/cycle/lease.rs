//! The tenant lease (SPEC section 3): acquiring it for the hourly window (bounded by the
//! tenant's time limit, retried over a lost connection), releasing it with the run's final
//! status, and the heartbeat that renews every lease this invocation holds. What runs under
//! the lease is `tenant`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::report::{result, CycleMetrics, TenantResult};
use super::retry::{abandon, is_db_lost, reconnect};
use super::{cadence_window, Shared, TenantRow};
use crate::alerts;
use crate::db;
#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};

/// `$5`: the cadence window (the UTC hour) this run belongs to; a tenant whose cycle
/// completed in it is not run again, whatever runner ran it and whenever (`$6` = `--force`).
const ACQUIRE: &str = crate::sql!("cycle/acquire");
const COMPLETED_IN_WINDOW: &str = crate::sql!("cycle/completed_in_window");
/// The lease this runner holds on a tenant, if any (see the acquire retry).
const OWN_LEASE: &str = crate::sql!("cycle/own_lease");
const RUN_CYCLE_NUMBER: &str = crate::sql!("cycle/run_cycle_number");
const HEARTBEAT: &str = crate::sql!("cycle/heartbeat");
const RELEASE: &str = crate::sql!("cycle/release");
const RUN_STATUS: &str = crate::sql!("cycle/run_status");

/// Renews every held lease each lease/3 seconds on one connection; a renewal that finds a
/// lease lost wakes that tenant's task, which stops at once.
pub(super) async fn heartbeat_loop(sh: &Shared<'_>) {
    let every = Duration::from_millis(sh.args.lease * 1000 / 3);
    let lease_secs = sh.args.lease as f64;
    loop {
        tokio::time::sleep(every).await;
        let held: Vec<(Uuid, Uuid, Arc<Notify>)> = match sh.leases.lock() {
            Ok(l) => l
                .iter()
                .map(|(run, (tenant, n))| (*run, *tenant, n.clone()))
                .collect(),
            Err(_) => continue,
        };
        if held.is_empty() {
            continue;
        }
        let conn = match db::get(&sh.pool, &sh.ctx.db).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "heartbeat could not get a connection");
                continue;
            }
        };
        for (run, tenant, lost) in held {
            match conn
                .query_one(HEARTBEAT, &[&tenant, &run, &lease_secs])
                .await
            {
                Ok(row) if row.get::<_, bool>(0) => {}
                Ok(_) => {
                    tracing::warn!(%tenant, %run, "lease lost: stopping this tenant's cycle");
                    lost.notify_one();
                }
                Err(e) => tracing::warn!(%tenant, error = %db::error_text(&e), "heartbeat failed"),
            }
        }
    }
}

pub(super) enum Ending {
    Done(CycleMetrics),
    Failed(String),
    /// Stopped by a time limit (tenant timeout, invocation deadline, a bounded wait).
    TimedOut(String),
    Lost,
    Interrupted,
    /// The connection was lost mid-cycle (retried, never final).
    DbLost(anyhow::Error),
}
/// The tenant's own time limit, never past the invocation's deadline.
pub(super) struct Limit {
    pub(super) at: Instant,
    /// Whether the invocation's `--deadline` is what ends it (not `--tenant-timeout`).
    invocation: bool,
    deadline_secs: u64,
    tenant_timeout_secs: u64,
}

impl Limit {
    pub(super) fn new(sh: &Shared<'_>, started: Instant) -> Limit {
        let own = started + Duration::from_secs(sh.args.tenant_timeout);
        Limit {
            at: own.min(sh.deadline_at),
            invocation: own >= sh.deadline_at,
            deadline_secs: sh.args.deadline,
            tenant_timeout_secs: sh.args.tenant_timeout,
        }
    }

    pub(super) fn reason(&self) -> String {
        if self.invocation {
            format!(
                "the invocation's --deadline of {} s passed; in-flight query cancelled",
                self.deadline_secs
            )
        } else {
            format!(
                "exceeded --tenant-timeout of {} s; in-flight query cancelled",
                self.tenant_timeout_secs
            )
        }
    }
}
/// What taking the lease gave: a run of this invocation, or the tenant's result without one.
pub(super) enum Acquired {
    Run {
        conn: db::Object,
        run_id: Uuid,
        cycle_number: i32,
    },
    Not(TenantResult),
}

/// Take the tenant's lease for this invocation's hourly window (bounded by the tenant's
/// limit: a lease row locked by someone else must not hang the runner).
pub(super) async fn acquire(
    sh: &Shared<'_>,
    t: &TenantRow,
    mut conn: db::Object,
    limit: &Limit,
    started: Instant,
) -> Result<Acquired> {
    let args = sh.args;
    let lease_secs = args.lease as f64;
    let trigger = args.trigger.as_str();
    let window = cadence_window(sh.ctx.now());
    let params: [&dyn db::Param; 6] = [
        &t.id,
        &sh.holder,
        &lease_secs,
        &trigger,
        &window,
        &args.force,
    ];
    let run_id: Option<Uuid> = retry_db!(sh, conn, {
        let cancel = conn.cancel_token();
        match tokio::time::timeout_at(limit.at.into(), conn.query_one(ACQUIRE, &params)).await {
            Ok(row) => row
                .with_context(|| format!("acquiring lease for tenant {}", t.id))
                .map(|r| Some(r.get::<_, Option<Uuid>>(0))),
            Err(_) => {
                abandon(sh, cancel, conn).await;
                let why = format!(
                    "could not take the lease within the tenant's time limit ({}) (its row is locked by another session)",
                    limit.reason()
                );
                return Ok(Acquired::Not(result(t, started, "timeout", Some(why))));
            }
        }
    })?
    .flatten();
    let run_id = match run_id {
        Some(id) => Some(id),
        // The connection may have been lost after the server took the lease for this
        // runner and before the answer arrived: the lease is then ours (the holder name is
        // unique per invocation).
        None => retry_db!(
            sh,
            conn,
            conn.query_opt(OWN_LEASE, &[&t.id, &sh.holder])
                .await
                .map_err(anyhow::Error::from)
        )?
        .map(|r| r.get(0)),
    };
    let Some(run_id) = run_id else {
        let completed: Option<DateTime<Utc>> = retry_db!(
            sh,
            conn,
            conn.query_one(COMPLETED_IN_WINDOW, &[&t.id, &window])
                .await
                .map_err(anyhow::Error::from)
        )?
        .get(0);
        let reason = match completed {
            Some(at) => format!(
                "already ran in this hour (window {}, completed {}); --force runs it again",
                window.format("%Y-%m-%d %H:00 UTC"),
                at.format("%H:%M:%S UTC")
            ),
            None => "lease held by another runner".to_string(),
        };
        return Ok(Acquired::Not(result(t, started, "skipped", Some(reason))));
    };
    let cycle_number: i32 = retry_db!(
        sh,
        conn,
        conn.query_one(RUN_CYCLE_NUMBER, &[&run_id])
            .await
            .map_err(anyhow::Error::from)
    )?
    .get(0);
    Ok(Acquired::Run {
        conn,
        run_id,
        cycle_number,
    })
}

/// Release the lease with the run's outcome. Returns the status and reason the run row
/// ends with (`None`: the server lost the run in a crash).
pub(super) async fn release(
    sh: &Shared<'_>,
    t: &TenantRow,
    mut conn: db::Object,
    run_id: Uuid,
    ending: &Ending,
) -> Result<(db::Object, Option<(&'static str, Option<String>)>)> {
    let (status, error): (&'static str, Option<String>) = match ending {
        Ending::Done(_) => ("completed", None),
        Ending::Failed(m) => ("failed", Some(m.clone())),
        Ending::TimedOut(m) => ("timeout", Some(m.clone())),
        Ending::Interrupted => ("failed", Some("interrupted".to_string())),
        Ending::Lost => ("failed", Some("lease lost to another runner".to_string())),
        Ending::DbLost(_) => unreachable!("a lost connection is retried in under_lease"),
    };
    // Releasing twice is harmless: a second call finds the lease gone and reports false,
    // and the run row then says what the first one recorded.
    let released: bool = retry_db!(
        sh,
        conn,
        conn.query_one(RELEASE, &[&t.id, &run_id, &status, &error])
            .await
            .with_context(|| format!("releasing lease for tenant {}", t.id))
    )?
    .get(0);
    if released {
        // A run that ended otherwise than completed may push the failure rate over its
        // threshold; the alert is best effort (the run is already recorded).
        if status != "completed" {
            if let Err(e) = alerts::evaluate_failure_rate(&*conn, t.id, sh.ctx.now()).await {
                tracing::warn!(tenant = %t.id, error = %format!("{e:#}"), "evaluating the failure-rate alert");
            }
        }
        return Ok((conn, Some((status, error))));
    }
    let row = retry_db!(
        sh,
        conn,
        conn.query_opt(RUN_STATUS, &[&run_id])
            .await
            .map_err(anyhow::Error::from)
    )?;
    let Some(row) = row else {
        return Ok((conn, None));
    };
    let s: String = row.get(0);
    let recorded: Option<String> = row.get(1);
    let fenced_out = Some("lease lost to another runner; nothing more was written".to_string());
    let outcome = match s.as_str() {
        // Our own release whose answer was lost with the connection.
        "completed" => ("completed", None),
        st if recorded.as_deref() == error.as_deref() && st == status => (status, error),
        // Fenced out: the run row says what the taker decided (normally `timeout`).
        "timeout" => ("timeout", fenced_out),
        _ => ("failed", fenced_out),
    };
    Ok((conn, Some(outcome)))
}
