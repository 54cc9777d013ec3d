//! `process-orders` and the order queue (SPEC §6) on a real PostgreSQL: each rule's finding
//! row and each auto-fix end to end (the boundaries of every rule are unit-tested in
//! src/orders/tests.rs), idempotent re-validation, queueing of orders the trigger missed,
//! claiming under real concurrency, crashes and edits mid-batch, stale claims, tenant
//! isolation, the command's output and exit codes, and the review targets the cycle turns
//! into cards.

use crate::common::*;
use autopilot::orders::{self, process_tenant, review_targets, OrdersReport, STALE_CLAIM_SECS};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

struct Setup {
    db: TestDb,
    c: Client,
    tenant: Uuid,
    client: Uuid,
}

async fn setup() -> Setup {
    let db = TestDb::new().await;
    let c = db.client().await;
    let tenant = tenant(&c, "Acme AMC", true).await;
    let client = client_row(&c, tenant, "Lender One").await;
    Setup {
        db,
        c,
        tenant,
        client,
    }
}

/// Run the tenant's queue through the library entry point the cycle uses.
async fn process_at(s: &Setup, now: DateTime<Utc>) -> OrdersReport {
    let mut conn = s.db.client().await;
    process_tenant(&mut conn, s.tenant, 500, None, now)
        .await
        .expect("process_tenant")
}

async fn process(s: &Setup) -> OrdersReport {
    process_at(s, Utc::now()).await
}

/// A complete valid order with `sql_set` applied (`UPDATE orders SET <sql_set>`).
async fn order_with(s: &Setup, sql_set: &str) -> Uuid {
    let id = order(&s.c, s.tenant, s.client).await;
    if !sql_set.is_empty() {
        s.c.execute(
            &format!("UPDATE orders SET {sql_set} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap();
    }
    id
}

async fn set_client(s: &Setup, sql_set: &str) {
    s.c.execute(
        &format!("UPDATE clients SET {sql_set} WHERE id = $1"),
        &[&s.client],
    )
    .await
    .unwrap();
}

#[derive(Debug)]
struct Entry {
    status: String,
    pricing_valid: Option<bool>,
    credit_valid: Option<bool>,
    requirements_valid: Option<bool>,
    auto_fixes: Value,
    attempts: i32,
    processed: bool,
}

async fn entry(c: &Client, order: Uuid) -> Entry {
    let r = c
        .query_one(
            "SELECT status, pricing_valid, credit_valid, requirements_valid, auto_fixes, attempts,
                    processed_at IS NOT NULL
             FROM order_processing_queue WHERE order_id = $1",
            &[&order],
        )
        .await
        .unwrap();
    Entry {
        status: r.get(0),
        pricing_valid: r.get(1),
        credit_valid: r.get(2),
        requirements_valid: r.get(3),
        auto_fixes: r.get(4),
        attempts: r.get(5),
        processed: r.get(6),
    }
}

/// The order's open findings as (code, severity, exception_type, field), sorted by code.
async fn open_findings(c: &Client, order: Uuid) -> Vec<(String, String, String, Option<String>)> {
    c.query(
        "SELECT code, severity, exception_type, field FROM order_processing_exceptions
         WHERE order_id = $1 AND NOT resolved ORDER BY code",
        &[&order],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

fn f(
    code: &str,
    severity: &str,
    ty: &str,
    field: &str,
) -> (String, String, String, Option<String>) {
    (code.into(), severity.into(), ty.into(), Some(field.into()))
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

// --- validation, end to end (every case of the rules is unit-tested in src/orders) -------

#[tokio::test]
async fn complete_order_is_validated_without_findings() {
    let s = setup().await;
    let o = order_with(&s, "").await;
    let r = process(&s).await;
    assert_eq!(
        r,
        OrdersReport {
            processed: 1,
            validated: 1,
            ..Default::default()
        }
    );
    let e = entry(&s.c, o).await;
    assert_eq!(e.status, "validated");
    assert_eq!(
        (e.pricing_valid, e.credit_valid, e.requirements_valid),
        (Some(true), Some(true), Some(true))
    );
    assert!(e.processed);
    assert_eq!(e.attempts, 1);
    assert!(open_findings(&s.c, o).await.is_empty());
}

#[tokio::test]
async fn auto_fixes_are_applied_to_the_order_and_recorded_on_its_entry() {
    let s = setup().await;
    let o = order_with(&s, "total_amount = 400, tech_fee = -10").await;
    let r = process(&s).await;
    assert_eq!((r.auto_fixes, r.validated), (2, 1));
    let row =
        s.c.query_one(
            "SELECT total_amount, tech_fee FROM orders WHERE id = $1",
            &[&o],
        )
        .await
        .unwrap();
    let (total, tech): (Decimal, Decimal) = (row.get(0), row.get(1));
    assert_eq!((total, tech), (dec("450.00"), Decimal::ZERO));
    assert_eq!(
        entry(&s.c, o).await.auto_fixes,
        serde_json::json!([
            {"field": "total_amount", "from": "400.00", "to": "450.00", "rule": "total_below_fee"},
            {"field": "tech_fee", "from": "-10.00", "to": "0.00", "rule": "negative_tech_fee"}
        ])
    );
}

/// A client of the setup's tenant with `sql_set` applied.
async fn other_client(s: &Setup, sql_set: &str) -> Uuid {
    let id = client_row(&s.c, s.tenant, "Lender").await;
    s.c.execute(
        &format!("UPDATE clients SET {sql_set} WHERE id = $1"),
        &[&id],
    )
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn each_rule_records_one_finding_row_and_sets_the_entry_outcome() {
    let s = setup().await;
    let product: Uuid =
        s.c.query_one(
            "INSERT INTO products (tenant_id, name, price, min_price, max_price)
             VALUES ($1, 'Full appraisal', 450, 460, 500) RETURNING id",
            &[&s.tenant],
        )
        .await
        .unwrap()
        .get(0);
    let inactive = other_client(&s, "is_active = false, credit_limit = 10000").await;
    let tight = other_client(&s, "credit_limit = 1000, balance = 600").await;
    let high = other_client(&s, "credit_limit = 1000, balance = 400").await;
    let bill = "payment_method = 'bill'";
    let cases: Vec<(String, &str, &str, &str, &str, &str)> = vec![
        // (SET clause, code, severity, type, field, entry status)
        (
            "fee_amount = 0".into(),
            orders::CODE_FEE_NOT_POSITIVE,
            "error",
            "pricing",
            "fee_amount",
            "exception",
        ),
        (
            format!("product_id = '{product}'"),
            orders::CODE_FEE_OUTSIDE_RANGE,
            "warning",
            "pricing",
            "fee_amount",
            "validated",
        ),
        (
            format!("{bill}, client_id = NULL"),
            orders::CODE_CLIENT_MISSING,
            "error",
            "credit",
            "client_id",
            "exception",
        ),
        (
            format!("{bill}, client_id = '{inactive}'"),
            orders::CODE_CLIENT_INACTIVE,
            "critical",
            "credit",
            "client_id",
            "exception",
        ),
        (
            format!("{bill}, client_id = '{tight}'"),
            orders::CODE_CREDIT_EXCEEDED,
            "error",
            "credit",
            "total_amount",
            "exception",
        ),
        (
            format!("{bill}, client_id = '{high}'"),
            orders::CODE_CREDIT_HIGH_USE,
            "warning",
            "credit",
            "total_amount",
            "validated",
        ),
        (
            "property_address = '  '".into(),
            orders::CODE_ADDRESS_MISSING,
            "error",
            "requirements",
            "property_address",
            "exception",
        ),
        (
            "borrower_email = NULL, borrower_phone = ''".into(),
            orders::CODE_BORROWER_CONTACT_MISSING,
            "error",
            "requirements",
            "borrower_email",
            "exception",
        ),
        (
            "property_city = NULL".into(),
            orders::CODE_CITY_MISSING,
            "warning",
            "requirements",
            "property_city",
            "validated",
        ),
        (
            "property_state = ''".into(),
            orders::CODE_STATE_MISSING,
            "warning",
            "requirements",
            "property_state",
            "validated",
        ),
        (
            "property_zip = NULL".into(),
            orders::CODE_ZIP_MISSING,
            "warning",
            "requirements",
            "property_zip",
            "validated",
        ),
        (
            "borrower_name = NULL".into(),
            orders::CODE_BORROWER_NAME_MISSING,
            "warning",
            "requirements",
            "borrower_name",
            "validated",
        ),
        (
            "property_contact_phone = NULL".into(),
            orders::CODE_CONTACT_PHONE_MISSING,
            "warning",
            "requirements",
            "property_contact_phone",
            "validated",
        ),
    ];
    let mut ids = Vec::new();
    for (set, ..) in &cases {
        ids.push(order_with(&s, set).await);
    }
    let r = process(&s).await;
    assert_eq!((r.processed, r.validated, r.exception), (13, 7, 6));
    for (o, (set, code, severity, ty, field, status)) in ids.iter().zip(&cases) {
        assert_eq!(
            open_findings(&s.c, *o).await,
            vec![f(code, severity, ty, field)],
            "{set}"
        );
        let e = entry(&s.c, *o).await;
        let valid =
            |t: &str| Some(!(*ty == t && (*severity == "error" || *severity == "critical")));
        assert_eq!(
            (
                e.status.as_str(),
                e.pricing_valid,
                e.credit_valid,
                e.requirements_valid
            ),
            (
                *status,
                valid("pricing"),
                valid("credit"),
                valid("requirements")
            ),
            "{set}"
        );
    }
}

#[tokio::test]
async fn cancelled_order_is_skipped_without_findings_or_fixes() {
    let s = setup().await;
    let o = order_with(
        &s,
        "status = 'cancelled', property_address = NULL, total_amount = 1",
    )
    .await;
    let r = process(&s).await;
    assert_eq!(
        r,
        OrdersReport {
            processed: 1,
            skipped: 1,
            ..Default::default()
        }
    );
    let e = entry(&s.c, o).await;
    assert_eq!(e.status, "skipped");
    assert!(e.processed);
    assert_eq!(
        count(&s.c, "SELECT count(*) FROM order_processing_exceptions").await,
        0
    );
    let total: Decimal =
        s.c.query_one("SELECT total_amount FROM orders WHERE id = $1", &[&o])
            .await
            .unwrap()
            .get(0);
    assert_eq!(total, dec("1.00"));
}

// --- re-validation ---------------------------------------------------------------------

async fn requeue(c: &Client, order: Uuid) {
    c.execute(
        "UPDATE order_processing_queue SET status = 'pending' WHERE order_id = $1",
        &[&order],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn revalidating_an_order_creates_no_duplicate_exception() {
    let s = setup().await;
    let o = order_with(
        &s,
        "property_address = NULL, borrower_name = NULL, fee_amount = -1",
    )
    .await;
    process(&s).await;
    let ids_before: Vec<Uuid> =
        s.c.query(
            "SELECT id FROM order_processing_exceptions WHERE order_id = $1 ORDER BY id",
            &[&o],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids_before.len(), 3);
    requeue(&s.c, o).await;
    let r = process(&s).await;
    assert_eq!((r.processed, r.exception), (1, 1));
    let ids_after: Vec<Uuid> =
        s.c.query(
            "SELECT id FROM order_processing_exceptions WHERE order_id = $1 ORDER BY id",
            &[&o],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids_before, ids_after);
    assert_eq!(entry(&s.c, o).await.attempts, 2);
}

#[tokio::test]
async fn findings_that_no_longer_apply_are_resolved_on_revalidation() {
    let s = setup().await;
    let o = order_with(&s, "property_address = NULL, borrower_name = NULL").await;
    process(&s).await;
    assert_eq!(entry(&s.c, o).await.status, "exception");
    s.c.execute(
        "UPDATE orders SET property_address = '2 Elm St' WHERE id = $1",
        &[&o],
    )
    .await
    .unwrap();
    requeue(&s.c, o).await;
    let now = Utc::now();
    process_at(&s, now).await;
    assert_eq!(entry(&s.c, o).await.status, "validated");
    let rows = s
        .c
        .query(
            "SELECT code, resolved, resolved_at FROM order_processing_exceptions WHERE order_id = $1 ORDER BY code",
            &[&o],
        )
        .await
        .unwrap();
    let got: Vec<(String, bool, Option<DateTime<Utc>>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, orders::CODE_BORROWER_NAME_MISSING);
    assert!(!got[0].1 && got[0].2.is_none(), "still applies: {got:?}");
    assert_eq!(got[1].0, orders::CODE_ADDRESS_MISSING);
    assert!(got[1].1, "no longer applies: {got:?}");
    let resolved_at = got[1].2.unwrap();
    assert!(
        (resolved_at - now).num_milliseconds().abs() < 1,
        "{resolved_at} vs {now}"
    );
}

// --- queueing and claiming -------------------------------------------------------------

#[tokio::test]
async fn order_inserted_with_the_trigger_disabled_is_still_processed() {
    let s = setup().await;
    s.c.batch_execute("ALTER TABLE orders DISABLE TRIGGER orders_queue_new_orders")
        .await
        .unwrap();
    let o = order_with(&s, "").await;
    let cancelled = order_with(&s, "status = 'cancelled'").await;
    s.c.batch_execute("ALTER TABLE orders ENABLE TRIGGER orders_queue_new_orders")
        .await
        .unwrap();
    assert_eq!(
        count(&s.c, "SELECT count(*) FROM order_processing_queue").await,
        0
    );

    s.db.cmd()
        .args(["process-orders", "--json"])
        .assert()
        .success();

    assert_eq!(entry(&s.c, o).await.status, "validated");
    let queued_cancelled =
        s.c.query_opt(
            "SELECT 1 FROM order_processing_queue WHERE order_id = $1",
            &[&cancelled],
        )
        .await
        .unwrap();
    assert!(
        queued_cancelled.is_none(),
        "a cancelled order is not queued by process-orders"
    );
}

#[tokio::test]
async fn two_concurrent_processes_validate_each_of_2000_orders_exactly_once() {
    let s = setup().await;
    // Every order lacks a borrower name: exactly one warning row per validation.
    s.c.execute(
        "INSERT INTO orders (tenant_id, client_id, fee_amount, total_amount, payment_method,
                             property_address, property_city, property_state, property_zip,
                             borrower_email, property_contact_phone)
         SELECT $1, $2, 400 + g % 100, 500, 'card', g || ' Main St', 'Springfield', 'IL', '62701',
                'b' || g || '@example.com', '555-0101'
         FROM generate_series(1, 2000) g",
        &[&s.tenant, &s.client],
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &s.c,
            "SELECT count(*) FROM order_processing_queue WHERE status = 'pending'"
        )
        .await,
        2000
    );

    let run = || {
        s.db.tokio_cmd()
            .args(["process-orders", "--batch", "50", "--json"])
            .output()
    };
    let (a, b) = tokio::join!(run(), run());
    let mut processed = 0;
    for out in [a.unwrap(), b.unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        processed += doc["processed"].as_u64().unwrap();
    }
    assert_eq!(
        processed, 2000,
        "the two runners' counts add up to each order once"
    );
    assert_eq!(
        count(
            &s.c,
            "SELECT count(*) FROM order_processing_queue WHERE status = 'validated'"
        )
        .await,
        2000
    );
    assert_eq!(
        count(
            &s.c,
            "SELECT count(*) FROM order_processing_queue WHERE attempts <> 1"
        )
        .await,
        0
    );
    assert_eq!(
        count(&s.c, "SELECT count(*) FROM order_processing_exceptions").await,
        2000
    );
    assert_eq!(
        count(&s.c, "SELECT count(DISTINCT order_id) FROM order_processing_exceptions WHERE code = 'requirements.borrower_name_missing'")
            .await,
        2000
    );
}

#[tokio::test]
async fn stale_processing_entry_is_reclaimed_and_a_fresh_one_is_not() {
    let s = setup().await;
    let stale = order_with(&s, "").await;
    let fresh = order_with(&s, "").await;
    let boundary = order_with(&s, "").await;
    let now = Utc::now();
    let claim = |order: Uuid, at: DateTime<Utc>| {
        let c = &s.c;
        async move {
            c.execute(
                "UPDATE order_processing_queue SET status = 'processing', claimed_at = $2, attempts = 1
                 WHERE order_id = $1",
                &[&order, &at],
            )
            .await
            .unwrap();
        }
    };
    claim(stale, now - Duration::seconds(STALE_CLAIM_SECS + 1)).await;
    claim(fresh, now - Duration::seconds(STALE_CLAIM_SECS - 60)).await;
    claim(boundary, now - Duration::seconds(STALE_CLAIM_SECS)).await;

    let r = process_at(&s, now).await;

    assert_eq!(
        r,
        OrdersReport {
            processed: 1,
            validated: 1,
            ..Default::default()
        }
    );
    let e = entry(&s.c, stale).await;
    assert_eq!((e.status.as_str(), e.attempts), ("validated", 2));
    for o in [fresh, boundary] {
        let e = entry(&s.c, o).await;
        assert_eq!((e.status.as_str(), e.attempts), ("processing", 1), "{o}");
    }
    // Later, the once-fresh claim is stale too.
    let r = process_at(&s, now + Duration::seconds(120)).await;
    assert_eq!(r.processed, 2);
}

/// Wait until an autopilot session of this database waits on a lock.
async fn wait_until_blocked(c: &Client) {
    wait_for_count(
        c,
        AUTOPILOT_LOCK_WAITS,
        1,
        "autopilot never blocked on the test's lock",
    )
    .await;
}

/// Wait until no autopilot session is left on this database.
async fn wait_until_gone(c: &Client) {
    wait_for_count(
        c,
        NO_AUTOPILOT_SESSION,
        1,
        "the killed runner's session never ended",
    )
    .await;
}

/// A transaction holding a lock on the exceptions table that blocks a batch's write (it
/// has claimed and validated its entries by then).
async fn hold_exceptions_lock(s: &Setup) -> Client {
    let tx = s.db.client().await;
    tx.batch_execute("BEGIN; LOCK TABLE order_processing_exceptions IN SHARE MODE")
        .await
        .unwrap();
    tx
}

#[tokio::test]
async fn claimed_entries_stay_pending_a_concurrent_runner_skips_them_and_a_killed_runner_releases_them(
) {
    let s = setup().await;
    let mut orders_ = Vec::new();
    for _ in 0..20 {
        orders_.push(order_with(&s, "borrower_name = NULL").await);
    }
    let lock = hold_exceptions_lock(&s).await;
    let mut first =
        s.db.tokio_cmd()
            .args(["process-orders", "--json"])
            .spawn()
            .unwrap();
    wait_until_blocked(&s.c).await;

    // The claim is a row lock only: nothing was written to claim the entries.
    assert_eq!(
        count(
            &s.c,
            "SELECT count(*) FROM order_processing_queue WHERE status = 'pending' AND attempts = 0"
        )
        .await,
        20
    );
    // A second runner meanwhile takes none of them (and is not blocked by them).
    let out =
        s.db.cmd()
            .args(["process-orders", "--json"])
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["processed"], 0);

    first.kill().await.unwrap();
    lock.batch_execute("ROLLBACK").await.unwrap();
    wait_until_gone(&s.c).await;
    assert_eq!(
        count(
            &s.c,
            "SELECT count(*) FROM order_processing_queue WHERE status = 'pending' AND attempts = 0"
        )
        .await,
        20,
        "the killed runner's batch was rolled back"
    );
    assert_eq!(
        count(&s.c, "SELECT count(*) FROM order_processing_exceptions").await,
        0
    );

    let out =
        s.db.cmd()
            .args(["process-orders", "--json"])
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["processed"], 20);
    for o in orders_ {
        let e = entry(&s.c, o).await;
        assert_eq!((e.status.as_str(), e.attempts), ("validated", 1), "{o}");
        assert_eq!(
            open_findings(&s.c, o).await,
            vec![f(
                orders::CODE_BORROWER_NAME_MISSING,
                "warning",
                "requirements",
                "borrower_name"
            )]
        );
    }
}

#[tokio::test]
async fn an_order_edited_while_its_batch_is_validated_keeps_the_edit_and_is_validated_again() {
    let s = setup().await;
    let o = order_with(&s, "total_amount = 1").await;
    let lock = hold_exceptions_lock(&s).await;
    let runner =
        s.db.tokio_cmd()
            .args(["process-orders", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    wait_until_blocked(&s.c).await;
    // The runner read total 1 and is about to raise it to the fee; a person sets it first
    // (not blocked: the batch locks queue entries, not orders).
    s.c.execute("UPDATE orders SET total_amount = 999 WHERE id = $1", &[&o])
        .await
        .unwrap();
    lock.batch_execute("ROLLBACK").await.unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        runner.wait_with_output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(
        (doc["processed"].as_u64(), doc["auto_fixes"].as_u64()),
        (Some(1), Some(0))
    );
    let total: Decimal =
        s.c.query_one("SELECT total_amount FROM orders WHERE id = $1", &[&o])
            .await
            .unwrap()
            .get(0);
    assert_eq!(total, dec("999.00"), "the person's edit is kept");
    let e = entry(&s.c, o).await;
    assert_eq!((e.status.as_str(), e.attempts), ("validated", 1));
    assert_eq!(e.auto_fixes, serde_json::json!([]));
}

#[tokio::test]
async fn a_runner_that_lost_its_lease_writes_nothing() {
    let s = setup().await;
    let o = order_with(&s, "total_amount = 1").await;
    let fence = autopilot::db::Fence {
        tenant_id: s.tenant,
        run_id: Uuid::new_v4(),
    };
    let mut conn = s.db.client().await;
    let err = process_tenant(&mut conn, s.tenant, 500, Some(&fence), Utc::now())
        .await
        .unwrap_err();
    assert!(autopilot::db::is_lease_lost_err(&err), "{err:#}");
    let e = entry(&s.c, o).await;
    assert_eq!((e.status.as_str(), e.attempts), ("pending", 0));
}

#[tokio::test]
async fn a_queue_entry_or_exception_can_never_name_another_tenants_order() {
    let s = setup().await;
    let other_tenant = tenant(&s.c, "Other AMC", true).await;
    let other_client = client_row(&s.c, other_tenant, "Other lender").await;
    let foreign = order(&s.c, other_tenant, other_client).await;
    s.c.execute(
        "DELETE FROM order_processing_queue WHERE order_id = $1",
        &[&foreign],
    )
    .await
    .unwrap();

    let err =
        s.c.execute(
            "INSERT INTO order_processing_queue (tenant_id, order_id) VALUES ($1, $2)",
            &[&s.tenant, &foreign],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );
    let err = s
        .c
        .execute(
            "INSERT INTO order_processing_exceptions (tenant_id, order_id, exception_type, severity, code, message)
             VALUES ($1, $2, 'other', 'error', 'x', 'x')",
            &[&s.tenant, &foreign],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );
}

// --- command ---------------------------------------------------------------------------

#[tokio::test]
async fn json_output_reports_totals_and_each_tenant_with_work() {
    let s = setup().await;
    order_with(&s, "").await; // validated
    order_with(&s, "total_amount = 10, tech_fee = -1").await; // validated, 2 fixes
    order_with(&s, "property_address = NULL").await; // exception
    let t2 = tenant(&s.c, "Second AMC", true).await;
    let c2 = client_row(&s.c, t2, "Lender Two").await;
    let cancelled = order(&s.c, t2, c2).await;
    s.c.execute(
        "UPDATE orders SET status = 'cancelled' WHERE id = $1",
        &[&cancelled],
    )
    .await
    .unwrap();
    let _idle = tenant(&s.c, "Idle AMC", true).await;

    let out =
        s.db.cmd()
            .args(["process-orders", "--json"])
            .assert()
            .success();
    let doc: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();

    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&doc),
        [
            "auto_fixes",
            "exception",
            "processed",
            "skipped",
            "tenants",
            "validated"
        ]
    );
    assert_eq!(
        (
            &doc["processed"],
            &doc["validated"],
            &doc["exception"],
            &doc["skipped"],
            &doc["auto_fixes"]
        ),
        (&4.into(), &2.into(), &1.into(), &1.into(), &2.into())
    );
    let tenants = doc["tenants"].as_array().unwrap();
    assert_eq!(
        tenants.len(),
        2,
        "tenants without work are not listed: {doc}"
    );
    let by_id = |id: Uuid| {
        tenants
            .iter()
            .find(|t| t["tenant_id"] == id.to_string())
            .unwrap()
            .clone()
    };
    let a = by_id(s.tenant);
    assert_eq!(
        keys(&a),
        [
            "auto_fixes",
            "exception",
            "processed",
            "skipped",
            "tenant_id",
            "validated"
        ]
    );
    assert_eq!(
        (
            &a["processed"],
            &a["validated"],
            &a["exception"],
            &a["auto_fixes"]
        ),
        (&3.into(), &2.into(), &1.into(), &2.into())
    );
    let b = by_id(t2);
    assert_eq!((&b["processed"], &b["skipped"]), (&1.into(), &1.into()));

    // A second run finds nothing to do.
    let out =
        s.db.cmd()
            .args(["process-orders", "--json"])
            .assert()
            .success();
    let doc: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(doc["processed"], 0);
}

#[tokio::test]
async fn listed_tenant_only_is_processed_and_reported() {
    let s = setup().await;
    let mine = order_with(&s, "").await;
    let t2 = tenant(&s.c, "Second AMC", true).await;
    let c2 = client_row(&s.c, t2, "Lender Two").await;
    let theirs = order(&s.c, t2, c2).await;

    let out =
        s.db.cmd()
            .args(["process-orders", "--tenant", &s.tenant.to_string()])
            .assert()
            .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains(&format!("tenant {}: processed 1", s.tenant)),
        "{text}"
    );
    assert!(text.contains("total: processed 1"), "{text}");
    assert_eq!(entry(&s.c, mine).await.status, "validated");
    assert_eq!(entry(&s.c, theirs).await.status, "pending");
}

#[tokio::test]
async fn unknown_tenant_exits_2_and_writes_nothing() {
    let s = setup().await;
    s.c.batch_execute("ALTER TABLE orders DISABLE TRIGGER orders_queue_new_orders")
        .await
        .unwrap();
    order_with(&s, "total_amount = 1").await;
    s.c.batch_execute("ALTER TABLE orders ENABLE TRIGGER orders_queue_new_orders")
        .await
        .unwrap();
    let queued = order_with(&s, "").await;

    s.db.cmd()
        .args([
            "process-orders",
            "--tenant",
            &s.tenant.to_string(),
            "--tenant",
            &Uuid::new_v4().to_string(),
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("unknown tenant"));

    assert_eq!(
        count(&s.c, "SELECT count(*) FROM order_processing_queue").await,
        1
    );
    assert_eq!(entry(&s.c, queued).await.status, "pending");
    assert_eq!(
        count(&s.c, "SELECT count(*) FROM orders WHERE total_amount = 1").await,
        1
    );
}

// --- review targets --------------------------------------------------------------------

#[tokio::test]
async fn review_targets_name_each_failing_order_once_until_a_review_card_is_open() {
    let s = setup().await;
    let error_order = order_with(&s, "property_address = NULL, borrower_email = NULL, borrower_phone = NULL, borrower_name = NULL").await;
    let _warning_only = order_with(&s, "borrower_name = NULL").await;
    process(&s).await;
    // A critical finding recorded later still comes first.
    set_client(&s, "is_active = false").await;
    let critical_order = order_with(&s, "payment_method = 'bill'").await;
    process(&s).await;

    let targets = review_targets(&s.c, s.tenant, 10).await.unwrap();
    let got: Vec<(Uuid, &str)> = targets
        .iter()
        .map(|t| (t.order_id, t.severity.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(critical_order, "critical"), (error_order, "error")]
    );
    assert_eq!(targets[0].code, orders::CODE_CLIENT_INACTIVE);
    assert_eq!(targets[0].client_id, Some(s.client));
    let payload = orders::review_card_payload(&targets[1]);
    assert_eq!(payload["order_id"], error_order.to_string());
    assert_eq!(payload["exception_id"], targets[1].exception_id.to_string());
    assert_eq!(review_targets(&s.c, s.tenant, 1).await.unwrap().len(), 1);

    // An open create_task card for the order hides it; a closed one does not.
    let card: Uuid =
        s.c.query_one(
            "INSERT INTO kanban_cards (tenant_id, type, title, state, agent_target, action_payload)
             VALUES ($1, 'create_task', 'Review', 'suggested', $2, $3) RETURNING id",
            &[&s.tenant, &error_order, &payload],
        )
        .await
        .unwrap()
        .get(0);
    let got: Vec<Uuid> = review_targets(&s.c, s.tenant, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.order_id)
        .collect();
    assert_eq!(got, vec![critical_order]);
    s.c.execute(
        "UPDATE kanban_cards SET state = 'done' WHERE id = $1",
        &[&card],
    )
    .await
    .unwrap();
    let got: Vec<Uuid> = review_targets(&s.c, s.tenant, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.order_id)
        .collect();
    assert_eq!(got, vec![critical_order, error_order]);

    // Once the order is cancelled and processed again, its findings are resolved.
    s.c.execute(
        "UPDATE orders SET status = 'cancelled' WHERE id = $1",
        &[&error_order],
    )
    .await
    .unwrap();
    requeue(&s.c, error_order).await;
    process(&s).await;
    let got: Vec<Uuid> = review_targets(&s.c, s.tenant, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.order_id)
        .collect();
    assert_eq!(got, vec![critical_order]);
}
