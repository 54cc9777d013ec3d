//! The review's six functions and their companions: exact signatures, pinned search_path,
//! lease semantics (fencing, capped heartbeat, takeover, cycle numbers), UTC rate-limit
//! windows, engagement clocks and priorities, the orders trigger and alert de-duplication
//! (SPEC §3, §4, §5, §7 and known defects 3, 4, 5, 6, 9, 12, 14, 15), including races
//! between many real connections.

use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

async fn acquire(c: &Client, tenant: Uuid, holder: &str, minutes: i32) -> Option<Uuid> {
    c.query_one(
        "SELECT acquire_tenant_lock($1, $2, $3)",
        &[&tenant, &holder, &minutes],
    )
    .await
    .unwrap()
    .get(0)
}

/// A lease taken two hours ago for one hour: expired now, its run still `running`.
async fn expired_lease(c: &Client, tenant: Uuid) -> Uuid {
    c.query_one(
        "SELECT acquire_tenant_lease($1, 'crashed-runner', interval '60 minutes', 'scheduled',
                                     now() - interval '2 hours')",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

async fn run_status(c: &Client, run: Uuid) -> (String, Option<DateTime<Utc>>, Option<i32>) {
    let r = c
        .query_one(
            "SELECT status, completed_at, duration_ms FROM agent_autonomous_runs WHERE id = $1",
            &[&run],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn lease_holder(c: &Client, tenant: Uuid) -> Option<Uuid> {
    c.query_opt(
        "SELECT run_id FROM agent_tenant_locks WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

/// Wait out the last seconds of a UTC hour so a race started now stays in one window.
async fn not_at_an_hour_boundary(c: &Client) {
    let left: f64 = c
        .query_one(
            "SELECT extract(epoch FROM date_trunc('hour', now(), 'UTC') + interval '1 hour' - clock_timestamp())::float8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if left < 3.0 {
        tokio::time::sleep(std::time::Duration::from_secs_f64(left + 0.5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Signatures and search_path

#[tokio::test]
async fn the_six_functions_of_the_review_have_exactly_their_signatures() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // (name, argument types, result, returns a set, defaults as pg_get_function_arguments shows them)
    let expected: [(&str, &str, &str, bool, &[&str]); 6] = [
        (
            "acquire_tenant_lock",
            "uuid, text, integer",
            "uuid",
            false,
            &["integer DEFAULT 60"],
        ),
        (
            "release_tenant_lock",
            "uuid, uuid, text",
            "boolean",
            false,
            &["text DEFAULT 'completed'::text"],
        ),
        (
            "extend_tenant_lock",
            "uuid, integer",
            "boolean",
            false,
            &["integer DEFAULT 30"],
        ),
        (
            "update_engagement_clock",
            "uuid, uuid, uuid, text, uuid",
            "uuid",
            false,
            &[],
        ),
        (
            "check_and_increment_rate_limit",
            "uuid, text, integer",
            "boolean",
            false,
            &[],
        ),
        ("get_engagement_violations", "uuid", "", true, &[]),
    ];
    for (name, types, result, set, defaults) in expected {
        let rows = c
            .query(
                "SELECT oidvectortypes(p.proargtypes), pg_get_function_result(p.oid), p.proretset,
                        pg_get_function_arguments(p.oid), p.pronargdefaults::int
                 FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.proname = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.len(),
            1,
            "{name}: expected exactly one function, found {}",
            rows.len()
        );
        let r = &rows[0];
        assert_eq!(r.get::<_, String>(0), types, "{name} argument types");
        if !set {
            assert_eq!(r.get::<_, String>(1), result, "{name} result");
        }
        assert_eq!(r.get::<_, bool>(2), set, "{name} returns a set");
        let args: String = r.get(3);
        assert_eq!(r.get::<_, i32>(4), defaults.len() as i32, "{name}: {args}");
        for d in defaults {
            assert!(args.ends_with(d), "{name}: {args} lacks {d}");
        }
    }
}

#[tokio::test]
async fn every_function_in_schema_public_pins_its_search_path() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT p.oid::regprocedure::text,
                    EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) s WHERE s LIKE 'search_path=%')
             FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 6, "found only {} functions", rows.len());
    let unpinned: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    assert!(
        unpinned.is_empty(),
        "functions without a pinned search_path: {unpinned:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Leases (defects 3, 4, 5, 6)

#[tokio::test]
async fn acquire_returns_null_while_an_unexpired_lease_is_held_and_defaults_to_sixty_minutes() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let run: Option<Uuid> = c
        .query_one("SELECT acquire_tenant_lock($1, 'first')", &[&t])
        .await
        .unwrap()
        .get(0);
    let run = run.expect("a free tenant is leased");
    let length: f64 = c
        .query_one(
            "SELECT extract(epoch FROM expires_at - locked_at)::float8 FROM agent_tenant_locks WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(length, 3600.0);
    assert_eq!(acquire(&c, t, "second", 60).await, None);
    assert_eq!(lease_holder(&c, t).await, Some(run));
    assert_eq!(run_status(&c, run).await.0, "running");
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        1
    );
}

#[tokio::test]
async fn release_by_a_run_whose_lease_was_taken_over_returns_false_and_removes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let old = expired_lease(&c, t).await;
    let new = acquire(&c, t, "new-runner", 60)
        .await
        .expect("expired lease is taken over");
    let released: bool = c
        .query_one(
            "SELECT release_tenant_lock($1, $2, 'completed')",
            &[&t, &old],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!released);
    assert_eq!(lease_holder(&c, t).await, Some(new));
    assert_eq!(run_status(&c, new).await.0, "running");
    assert_eq!(
        run_status(&c, old).await.0,
        "timeout",
        "the fenced-out run keeps its timeout"
    );
}

#[tokio::test]
async fn release_by_the_holder_returns_true_and_closes_the_run() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let run = acquire(&c, t, "runner", 60).await.unwrap();
    let released: bool = c
        .query_one("SELECT release_tenant_lock($1, $2)", &[&t, &run])
        .await
        .unwrap()
        .get(0);
    assert!(released);
    assert_eq!(lease_holder(&c, t).await, None);
    let (status, completed_at, duration_ms) = run_status(&c, run).await;
    assert_eq!(status, "completed");
    assert!(completed_at.is_some());
    assert!(duration_ms.is_some_and(|d| d >= 0), "{duration_ms:?}");
    // A second release of the same run is fenced too.
    let again: bool = c
        .query_one("SELECT release_tenant_lock($1, $2)", &[&t, &run])
        .await
        .unwrap()
        .get(0);
    assert!(!again);

    let run = acquire(&c, t, "runner", 60).await.unwrap();
    let released: bool = c
        .query_one("SELECT release_tenant_lock($1, $2, 'failed')", &[&t, &run])
        .await
        .unwrap()
        .get(0);
    assert!(released);
    assert_eq!(run_status(&c, run).await.0, "failed");
}

#[tokio::test]
async fn ten_heartbeats_never_push_expiry_beyond_one_lease_past_now() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    acquire(&c, t, "runner", 60).await.unwrap();
    for minutes in [30, 30, 30, 30, 30, 30, 30, 30, 600, 30] {
        let extended: bool = c
            .query_one("SELECT extend_tenant_lock($1, $2)", &[&t, &minutes])
            .await
            .unwrap()
            .get(0);
        assert!(extended);
        let within: bool = c
            .query_one(
                "SELECT expires_at <= clock_timestamp() + interval '60 minutes' FROM agent_tenant_locks WHERE tenant_id = $1",
                &[&t],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            within,
            "heartbeat of {minutes} min pushed expiry beyond one lease"
        );
    }
    let defaulted: bool = c
        .query_one("SELECT extend_tenant_lock($1)", &[&t])
        .await
        .unwrap()
        .get(0);
    assert!(defaulted);
}

#[tokio::test]
async fn heartbeat_moves_expiry_to_now_plus_extension_when_later() {
    let db = TestDb::new().await;
    let mut c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let run = acquire(&c, t, "runner", 60).await.unwrap();
    let tx = c.transaction().await.unwrap();
    // 50 minutes into the lease a 30-minute heartbeat leaves 30 minutes from then.
    let ok: bool = tx
        .query_one(
            "SELECT extend_tenant_lease($1, $2, interval '30 minutes', now() + interval '50 minutes')",
            &[&t, &run],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);
    let exact: bool = tx
        .query_one(
            "SELECT expires_at = now() + interval '80 minutes' FROM agent_tenant_locks WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert!(exact);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn heartbeat_of_an_expired_lease_returns_false_and_changes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    expired_lease(&c, t).await;
    let before: DateTime<Utc> = c
        .query_one(
            "SELECT expires_at FROM agent_tenant_locks WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    let extended: bool = c
        .query_one("SELECT extend_tenant_lock($1, 30)", &[&t])
        .await
        .unwrap()
        .get(0);
    assert!(!extended);
    let after: DateTime<Utc> = c
        .query_one(
            "SELECT expires_at FROM agent_tenant_locks WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    let unknown: bool = c
        .query_one("SELECT extend_tenant_lock($1, 30)", &[&Uuid::new_v4()])
        .await
        .unwrap()
        .get(0);
    assert!(!unknown);
}

#[tokio::test]
async fn expired_lease_taken_over_marks_the_old_run_timeout() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let old = expired_lease(&c, t).await;
    assert_eq!(run_status(&c, old).await.0, "running");
    let new = acquire(&c, t, "next-runner", 60).await.expect("takeover");
    let (status, completed_at, duration_ms) = run_status(&c, old).await;
    assert_eq!(status, "timeout");
    assert!(completed_at.is_some());
    assert!(
        duration_ms.is_some_and(|d| d >= 2 * 3600 * 1000 - 60_000),
        "{duration_ms:?}"
    );
    assert_eq!(run_status(&c, new).await.0, "running");
    assert_eq!(lease_holder(&c, t).await, Some(new));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'running'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn cycle_number_increments_with_each_acquisition_per_tenant() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let other = tenant(&c, "B", true).await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let run = acquire(&c, t, "runner", 60).await.unwrap();
        c.execute("SELECT release_tenant_lock($1, $2)", &[&t, &run])
            .await
            .unwrap();
        runs.push(run);
    }
    // The third comes after a crash: a takeover still counts on.
    let crashed = expired_lease(&c, t).await;
    runs.push(crashed);
    runs.push(acquire(&c, t, "runner", 60).await.unwrap());
    let mut cycles = Vec::new();
    for run in &runs {
        let n: i32 = c
            .query_one(
                "SELECT cycle_number FROM agent_autonomous_runs WHERE id = $1",
                &[run],
            )
            .await
            .unwrap()
            .get(0);
        cycles.push(n);
    }
    assert_eq!(cycles, vec![1, 2, 3, 4]);
    let first_of_other = acquire(&c, other, "runner", 60).await.unwrap();
    let n: i32 = c
        .query_one(
            "SELECT cycle_number FROM agent_autonomous_runs WHERE id = $1",
            &[&first_of_other],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

// ---------------------------------------------------------------------------------------
// Races between real connections

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_connections_racing_for_one_tenant_lease_yield_exactly_one_run() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let n = 32;
    let winners: Vec<Uuid> = race(
        &db.url,
        n,
        async |_, _| {},
        async move |i, c| acquire(c, t, &format!("racer-{i}"), 60).await,
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(runs_by_status(&c).await, statuses(&[("running", 1)]));
    assert_eq!(lease_holder(&c, t).await, Some(winners[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racers_on_an_expired_lease_take_it_over_exactly_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let old = expired_lease(&c, t).await;
    let n = 16;
    let winners: Vec<Uuid> = race(
        &db.url,
        n,
        async |_, _| {},
        async move |i, c| acquire(c, t, &format!("racer-{i}"), 60).await,
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(run_status(&c, old).await.0, "timeout");
    assert_eq!(
        runs_by_status(&c).await,
        statuses(&[("running", 1), ("timeout", 1)])
    );
    assert_eq!(lease_holder(&c, t).await, Some(winners[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_connections_in_two_time_zones_racing_for_five_emails_get_exactly_five() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    not_at_an_hour_boundary(&c).await;
    let n = 20;
    let in_zone = async |i: usize, c: &Client| {
        let zone = if i % 2 == 0 { "UTC" } else { "Asia/Kolkata" };
        c.batch_execute(&format!("SET TimeZone = '{zone}'"))
            .await
            .unwrap();
    };
    let take = async move |_, c: &Client| {
        c.query_one(
            "SELECT check_and_increment_rate_limit($1, 'email_send', 5)",
            &[&t],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    };
    let granted = race(&db.url, n, in_zone, take)
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(granted, 5);
    let rows = c
        .query(
            "SELECT action_count, window_start FROM agent_rate_limits WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one shared UTC window");
    assert_eq!(rows[0].get::<_, i32>(0), 5);
}

// ---------------------------------------------------------------------------------------
// Rate-limit windows (defect 14)

#[tokio::test]
async fn rate_limit_window_is_the_utc_hour_whatever_the_session_time_zone() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    c.batch_execute("SET TimeZone = 'Asia/Kolkata'")
        .await
        .unwrap();
    let at = Utc.with_ymd_and_hms(2025, 1, 15, 10, 45, 0).unwrap();
    let ok: bool = c
        .query_one(
            "SELECT rate_limit_take($1, 'email_send', 5, $2)",
            &[&t, &at],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);
    let r = c
        .query_one("SELECT window_start, window_end, action_count FROM agent_rate_limits WHERE tenant_id = $1", &[&t])
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, DateTime<Utc>>(0),
        Utc.with_ymd_and_hms(2025, 1, 15, 10, 0, 0).unwrap()
    );
    assert_eq!(
        r.get::<_, DateTime<Utc>>(1),
        Utc.with_ymd_and_hms(2025, 1, 15, 11, 0, 0).unwrap()
    );
    assert_eq!(r.get::<_, i32>(2), 1);
}

#[tokio::test]
async fn sessions_in_utc_and_kolkata_share_one_counter_and_together_never_exceed_the_limit() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let utc = db.client().await;
    utc.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let kolkata = db.client().await;
    kolkata
        .batch_execute("SET TimeZone = 'Asia/Kolkata'")
        .await
        .unwrap();
    let mut results = Vec::new();
    // 10:05 to 10:55 UTC: in Kolkata 15:35 to 16:25, which spans two local hours.
    for (i, minute) in [5u32, 15, 25, 35, 45, 55].into_iter().enumerate() {
        let session = if i % 2 == 0 { &kolkata } else { &utc };
        let at = Utc.with_ymd_and_hms(2025, 1, 15, 10, minute, 0).unwrap();
        let ok: bool = session
            .query_one(
                "SELECT rate_limit_take($1, 'email_send', 5, $2)",
                &[&t, &at],
            )
            .await
            .unwrap()
            .get(0);
        results.push(ok);
    }
    assert_eq!(results, vec![true, true, true, true, true, false]);
    let rows = c
        .query(
            "SELECT action_count FROM agent_rate_limits WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), 5, "a refused call uses no quota");
    // The next UTC hour is a new window.
    let at = Utc.with_ymd_and_hms(2025, 1, 15, 11, 0, 0).unwrap();
    let ok: bool = kolkata
        .query_one(
            "SELECT rate_limit_take($1, 'email_send', 5, $2)",
            &[&t, &at],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);
}

// ---------------------------------------------------------------------------------------
// Engagement clocks (defects 9, 15)

#[tokio::test]
async fn update_engagement_clock_returns_the_contact_clock_due_one_default_interval_past_now() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let who = contact(&c, t, client, Some("pat@example.com"), None, false).await;
    let r = c
        .query_one(
            "SELECT update_engagement_clock($1, $2, $3, 'email', NULL), now()",
            &[&t, &client, &who],
        )
        .await
        .unwrap();
    let (clock, now): (Uuid, DateTime<Utc>) = (r.get(0), r.get(1));
    let r = c
        .query_one(
            "SELECT contact_id, client_id, next_touch_due, last_touch_at, last_touch_type, last_touch_by
             FROM engagement_clocks WHERE id = $1",
            &[&clock],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<Uuid>>(0), Some(who));
    assert_eq!(r.get::<_, Option<Uuid>>(1), Some(client));
    assert_eq!(
        r.get::<_, DateTime<Utc>>(2),
        now + chrono::Duration::days(21)
    );
    assert_eq!(r.get::<_, Option<DateTime<Utc>>>(3), Some(now));
    assert_eq!(r.get::<_, Option<String>>(4).as_deref(), Some("email"));
    assert_eq!(r.get::<_, Option<Uuid>>(5), None, "NULL = the agent");
    // The client-level clock was touched as well.
    let client_level = c
        .query_one(
            "SELECT next_touch_due FROM engagement_clocks WHERE client_id = $1 AND contact_id IS NULL",
            &[&client],
        )
        .await
        .unwrap();
    assert_eq!(
        client_level.get::<_, DateTime<Utc>>(0),
        now + chrono::Duration::days(21)
    );
}

#[tokio::test]
async fn update_engagement_clock_uses_the_clocks_own_interval_and_records_the_person() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let who = contact(&c, t, client, None, None, false).await;
    let rep = profile(&c, t).await;
    let clock: Uuid = c
        .query_one(
            "SELECT update_engagement_clock($1, $2, $3, 'call', NULL)",
            &[&t, &client, &who],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE engagement_clocks SET engagement_interval_days = 7 WHERE id = $1",
        &[&clock],
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT update_engagement_clock($1, $2, $3, 'meeting', $4), now()",
            &[&t, &client, &who, &rep],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Uuid>(0), clock, "the same clock is updated");
    let now: DateTime<Utc> = r.get(1);
    let r = c
        .query_one("SELECT next_touch_due, last_touch_by, last_touch_type FROM engagement_clocks WHERE id = $1", &[&clock])
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, DateTime<Utc>>(0),
        now + chrono::Duration::days(7)
    );
    assert_eq!(r.get::<_, Option<Uuid>>(1), Some(rep));
    assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("meeting"));
}

#[tokio::test]
async fn new_clocks_take_the_tenants_engagement_interval() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t =
        tenant_with_settings(&c, "A", serde_json::json!({"engagement_interval_days": 14})).await;
    let client = client_row(&c, t, "Acme").await;
    let who = contact(&c, t, client, None, None, false).await;
    let r = c
        .query_one(
            "SELECT update_engagement_clock($1, $2, $3, 'email', NULL), now()",
            &[&t, &client, &who],
        )
        .await
        .unwrap();
    let (clock, now): (Uuid, DateTime<Utc>) = (r.get(0), r.get(1));
    let r = c
        .query_one(
            "SELECT next_touch_due, engagement_interval_days FROM engagement_clocks WHERE id = $1",
            &[&clock],
        )
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, DateTime<Utc>>(0),
        now + chrono::Duration::days(14)
    );
    assert_eq!(r.get::<_, i32>(1), 14);
}

#[tokio::test]
async fn an_agent_touch_with_no_person_resets_an_overdue_clock() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let who = contact(&c, t, client, Some("pat@example.com"), None, true).await;
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due, priority_score)
         VALUES ($1, $2, $3, now() - interval '30 days', 70)",
        &[&t, &client, &who],
    )
    .await
    .unwrap();
    let before = c
        .query("SELECT * FROM get_engagement_violations($1)", &[&t])
        .await
        .unwrap();
    assert_eq!(before.len(), 1);
    c.execute(
        "SELECT update_engagement_clock($1, $2, $3, 'email', NULL)",
        &[&t, &client, &who],
    )
    .await
    .unwrap();
    let after = c
        .query("SELECT * FROM get_engagement_violations($1)", &[&t])
        .await
        .unwrap();
    assert!(
        after.is_empty(),
        "the clock did not reset after the agent's e-mail"
    );
    let compliant: bool = c
        .query_one(
            "SELECT is_compliant FROM engagement_clock_status WHERE contact_id = $1",
            &[&who],
        )
        .await
        .unwrap()
        .get(0);
    assert!(compliant);
}

#[tokio::test]
async fn a_contact_clock_names_the_contacts_client_even_when_none_is_given() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let who = contact(&c, t, client, None, None, false).await;
    let clock: Uuid = c
        .query_one(
            "SELECT update_engagement_clock($1, NULL, $2, 'task', NULL)",
            &[&t, &who],
        )
        .await
        .unwrap()
        .get(0);
    let client_of_clock: Option<Uuid> = c
        .query_one(
            "SELECT client_id FROM engagement_clocks WHERE id = $1",
            &[&clock],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(client_of_clock, Some(client));
    // Another tenant's contact is refused.
    let other = tenant(&c, "B", true).await;
    let err = c
        .query_one(
            "SELECT update_engagement_clock($1, NULL, $2, 'task', NULL)",
            &[&other, &who],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err:?}");
}

#[tokio::test]
async fn engagement_violations_come_most_days_overdue_first_then_highest_priority() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let other = tenant(&c, "B", true).await;
    // (name, due relative to now, priority)
    let clocks = [
        ("ten days", "-10 days -1 hour", 5),
        ("three days, priority 60", "-3 days -2 hours", 60),
        (
            "three days and more hours, priority 20",
            "-3 days -20 hours",
            20,
        ),
        ("due tomorrow", "1 day", 99),
        ("due an hour ago", "-1 hour", 90),
    ];
    let mut ids = Vec::new();
    for (name, due, priority) in clocks {
        let client = client_row(&c, t, name).await;
        let id: Uuid = c
            .query_one(
                "INSERT INTO engagement_clocks (tenant_id, client_id, next_touch_due, priority_score)
                 VALUES ($1, $2, now() + $3::text::interval, $4::int) RETURNING id",
                &[&t, &client, &due, &priority],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }
    let foreign = client_row(&c, other, "other").await;
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, next_touch_due) VALUES ($1, $2, now() - interval '40 days')",
        &[&other, &foreign],
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT clock_id, days_overdue FROM get_engagement_violations($1)",
            &[&t],
        )
        .await
        .unwrap();
    let got: Vec<(Uuid, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![(ids[0], 10), (ids[1], 3), (ids[2], 3), (ids[4], 0)]
    );
}

#[tokio::test]
async fn engagement_priority_is_two_points_a_day_up_to_fifty_plus_primary_and_title_bonuses() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let cases: &[(i32, bool, Option<&str>, f64)] = &[
        (0, false, None, 0.0),
        (1, false, None, 2.0),
        (24, false, None, 48.0),
        (25, false, None, 50.0),
        (400, false, None, 50.0),
        (-3, false, None, 0.0),
        (0, true, None, 20.0),
        (0, false, Some("President"), 15.0),
        (0, false, Some("Vice President"), 15.0),
        (0, false, Some("ceo"), 15.0),
        (0, false, Some("Owner"), 15.0),
        (0, false, Some("DIRECTOR of Sales"), 15.0),
        (0, false, Some("Office Manager"), 10.0),
        (0, false, Some("team LEAD"), 10.0),
        (0, false, Some("Head of Operations"), 10.0),
        (0, false, Some("Director and Manager"), 15.0),
        (0, false, Some("Analyst"), 0.0),
        (30, true, Some("CEO"), 85.0),
        (10, true, Some("manager"), 50.0),
    ];
    for (days, primary, title, want) in cases {
        let got: f64 = c
            .query_one(
                "SELECT engagement_priority($1, $2, $3)::float8",
                &[days, primary, title],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            got, *want,
            "days {days}, primary {primary}, title {title:?}"
        );
    }
}

#[tokio::test]
async fn days_overdue_counts_whole_days_past_due_and_zero_before() {
    let db = TestDb::new().await;
    let c = db.client().await;
    for (offset, want) in [
        ("-3 days -12 hours", 3),
        ("-1 second", 0),
        ("0", 0),
        ("1 day", 0),
        ("-21 days", 21),
    ] {
        let got: i32 = c
            .query_one(
                "SELECT engagement_days_overdue(now() + $1::text::interval, now())",
                &[&offset],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{offset}");
    }
}

// ---------------------------------------------------------------------------------------
// Orders trigger and alerts (defect 12)

#[tokio::test]
async fn orders_inserted_singly_or_in_bulk_are_queued_once_each_as_pending() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let single = order(&c, t, client).await;
    let bulk: Vec<Uuid> = c
        .query(
            "INSERT INTO orders (tenant_id, client_id, fee_amount, total_amount)
             VALUES ($1, $2, 100, 100), ($1, $2, 200, 200), ($1, $2, 300, 300) RETURNING id",
            &[&t, &client],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bulk.len(), 3);
    let mut all = bulk.clone();
    all.push(single);
    for o in &all {
        let rows = c
            .query(
                "SELECT status, tenant_id FROM order_processing_queue WHERE order_id = $1",
                &[o],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "order {o}");
        assert_eq!(rows[0].get::<_, String>(0), "pending");
        assert_eq!(rows[0].get::<_, Uuid>(1), t);
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM order_processing_queue").await,
        4
    );
}

#[tokio::test]
async fn a_repeated_alert_counts_occurrences_while_open_and_opens_anew_after_acknowledgement() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let other = tenant(&c, "B", true).await;
    let raise =
        "SELECT alert_id, opened FROM raise_agent_alert($1, $2, 'warning', 'compliance low')";
    let first = c.query_one(raise, &[&t, &"low_compliance"]).await.unwrap();
    let second = c.query_one(raise, &[&t, &"low_compliance"]).await.unwrap();
    assert!(first.get::<_, bool>(1));
    assert!(!second.get::<_, bool>(1));
    let id: Uuid = first.get(0);
    assert_eq!(second.get::<_, Uuid>(0), id);
    let occurrences: i32 = c
        .query_one("SELECT occurrences FROM agent_alerts WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(occurrences, 2);
    assert_eq!(count(&c, "SELECT count(*) FROM agent_alerts").await, 1);
    // Other types and tenants open their own.
    assert!(c
        .query_one(raise, &[&t, &"high_block_rate"])
        .await
        .unwrap()
        .get::<_, bool>(1));
    assert!(c
        .query_one(raise, &[&other, &"low_compliance"])
        .await
        .unwrap()
        .get::<_, bool>(1));

    c.execute(
        "UPDATE agent_alerts SET acknowledged = true, acknowledged_at = now() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let third = c.query_one(raise, &[&t, &"low_compliance"]).await.unwrap();
    assert!(third.get::<_, bool>(1));
    assert_ne!(third.get::<_, Uuid>(0), id);
    let rows = c
        .query(
            "SELECT acknowledged, occurrences FROM agent_alerts WHERE tenant_id = $1 AND alert_type = 'low_compliance'
             ORDER BY acknowledged DESC",
            &[&t],
        )
        .await
        .unwrap();
    let got: Vec<(bool, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(true, 2), (false, 1)]);
}

// ---------------------------------------------------------------------------------------
// Privileges

#[tokio::test]
async fn service_role_can_run_the_six_functions_it_is_granted() {
    // service_role is the only API role allowed to execute them; on vanilla PostgreSQL it
    // must also be able to read the host rows they consult (tenant settings, contacts).
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let who = contact(&c, t, client, Some("pat@example.com"), None, false).await;
    let service = db.as_service_role().await;
    let run: Option<Uuid> = service
        .query_one("SELECT acquire_tenant_lock($1, 'svc')", &[&t])
        .await
        .unwrap()
        .get(0);
    let run = run.expect("lease");
    assert!(service
        .query_one("SELECT extend_tenant_lock($1)", &[&t])
        .await
        .unwrap()
        .get::<_, bool>(0));
    assert!(service
        .query_one(
            "SELECT check_and_increment_rate_limit($1, 'email_send', 5)",
            &[&t]
        )
        .await
        .unwrap()
        .get::<_, bool>(0));
    let clock: Uuid = service
        .query_one(
            "SELECT update_engagement_clock($1, $2, $3, 'email', NULL)",
            &[&t, &client, &who],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM engagement_clocks WHERE id = '{clock}'")
        )
        .await,
        1
    );
    assert!(service
        .query("SELECT * FROM get_engagement_violations($1)", &[&t])
        .await
        .unwrap()
        .is_empty());
    assert!(service
        .query_one("SELECT release_tenant_lock($1, $2)", &[&t, &run])
        .await
        .unwrap()
        .get::<_, bool>(0));
}

#[tokio::test]
async fn authenticated_and_anon_cannot_run_the_agents_functions() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let p = profile(&c, t).await;
    for role in [db.as_authenticated(p).await, db.as_anon().await] {
        for sql in [
            "SELECT acquire_tenant_lock($1, 'x')",
            "SELECT extend_tenant_lock($1)",
            "SELECT check_and_increment_rate_limit($1, 'email_send', 1000)",
            "SELECT * FROM get_engagement_violations($1)",
        ] {
            let err = role.query(sql, &[&t]).await.expect_err(sql);
            assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
        }
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
}

#[tokio::test]
async fn batch_score_refresh_agrees_with_engagement_priority_for_every_title_and_due_date() {
    // refresh_engagement_scores spells the formula out inline for speed; it must give the
    // same score as engagement_priority for every kind of contact and due date.
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    let titles = [
        None,
        Some("President"),
        Some("vice president of lending"),
        Some("CEO & Founder"),
        Some("Owner"),
        Some("Managing Director"),
        Some("Branch Manager"),
        Some("Team LEAD"),
        Some("Head of Operations"),
        Some("Loan Officer"),
        Some("Leadership Coach"),
    ];
    let mut n = 0;
    for title in titles {
        for primary in [false, true] {
            let k = contact(&c, t, cl, Some("x@acme.example"), title, primary).await;
            // Due dates from 40 days ago to 3 days ahead, including the exact instant.
            let offset_hours = (n % 11) as f64 * 100.0 - 72.0;
            c.execute(
                "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due, priority_score)
                 VALUES ($1, $2, $3, now() - make_interval(hours => $4::float8::int), 0)",
                &[&t, &cl, &k, &offset_hours],
            )
            .await
            .unwrap();
            n += 1;
        }
    }
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, next_touch_due) VALUES ($1, $2, now() - interval '9 days')",
        &[&t, &cl],
    )
    .await
    .unwrap();
    let changed: i64 = c
        .query_one("SELECT refresh_engagement_scores($1, now())", &[&t])
        .await
        .unwrap()
        .get(0);
    assert!(changed > 0);
    let disagreements: i64 = c
        .query_one(
            "SELECT count(*) FROM engagement_clocks e LEFT JOIN contacts ct ON ct.id = e.contact_id
              WHERE e.tenant_id = $1
                AND e.priority_score <> engagement_priority(engagement_days_overdue(e.next_touch_due, now()),
                                                            coalesce(ct.is_primary, false), ct.title)",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(disagreements, 0);
    // A second refresh at the same instant changes nothing.
    let again: i64 = c
        .query_one("SELECT refresh_engagement_scores($1, now())", &[&t])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0);
}

#[tokio::test]
async fn a_runner_does_not_rerun_a_tenant_another_runner_finished_after_it_started() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let started: chrono::DateTime<chrono::Utc> =
        c.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let other: uuid::Uuid = c
        .query_one(
            "SELECT acquire_tenant_lease($1, 'runner-a', interval '1 minute')",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    c.execute("SELECT release_tenant_lock($1, $2)", &[&t, &other])
        .await
        .unwrap();
    // Runner B started before A finished: it skips the tenant and leaves no lease behind.
    let b: Option<uuid::Uuid> = c
        .query_one(
            "SELECT acquire_tenant_lease($1, 'runner-b', interval '1 minute', 'scheduled', now(), $2)",
            &[&t, &started],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b, None);
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_tenant_locks").await,
        0
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        1
    );
    // A runner started after A finished runs it.
    let later: chrono::DateTime<chrono::Utc> =
        c.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let b: Option<uuid::Uuid> = c
        .query_one(
            "SELECT acquire_tenant_lease($1, 'runner-b', interval '1 minute', 'scheduled', now(), $2)",
            &[&t, &later],
        )
        .await
        .unwrap()
        .get(0);
    assert!(b.is_some());
}

/// Wait until a session of this database waits on a lock.
async fn wait_for_a_lock_wait(c: &Client) {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND wait_event_type = 'Lock'";
    wait_for_count(c, sql, 1, "no session ever waited on a lock").await;
}

#[tokio::test]
async fn a_takeover_of_an_expired_lease_waits_for_the_fenced_transaction_that_holds_it() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Fenced", true).await;
    let run = acquire(&c, t, "old-runner", 60).await.unwrap();
    let fence = autopilot::db::Fence {
        tenant_id: t,
        run_id: run,
    };
    let mut writer = db.client().await;
    let tx = fence.begin(&mut writer).await.expect("the lease is held");
    // The lease expires while the write is in flight (a heartbeat, not a key change, is
    // not blocked by the fence's lock); a thief tries to take it over.
    c.execute(
        "UPDATE agent_tenant_locks SET expires_at = now() - interval '1 second' WHERE tenant_id = $1",
        &[&t],
    )
    .await
    .unwrap();
    let thief_client = db.client().await;
    let thief = tokio::spawn(async move { acquire(&thief_client, t, "thief", 60).await });
    wait_for_a_lock_wait(&c).await;
    assert!(
        !thief.is_finished(),
        "the takeover waits for the fenced write"
    );
    autopilot::db::Sql::execute(
        &tx,
        "UPDATE tenants SET name = 'written under the lease' WHERE id = $1",
        &[&t],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let new_run = thief
        .await
        .unwrap()
        .expect("the thief takes the lease after the commit");
    assert_ne!(new_run, run);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM tenants WHERE name = 'written under the lease'"
        )
        .await,
        1
    );
    // The old run's next fenced transaction is refused.
    let err = fence.begin(&mut writer).await.err().expect("lease lost");
    assert!(autopilot::db::is_lease_lost_err(&err), "{err:#}");
}
