//! Through a transaction-mode pooler with no prepared-statement support (PgBouncer 1.18,
//! `pool_mode = transaction`, started by `scripts/pg-ephemeral --pgbouncer`, as
//! `make test` does): every command but `migrate` works, two overlapping runners still run
//! each tenant once, and `migrate` stops before changing anything, naming the direct port.

use crate::smtp;

use crate::common::*;
use autopilot::db::{DbSettings, Pooling, Statements};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

/// The PgBouncer (transaction pooling) in front of the test server.
fn bouncer_port() -> String {
    std::env::var("AUTOPILOT_TEST_PGBOUNCER_PORT").unwrap_or_else(|_| {
        panic!(
            "AUTOPILOT_TEST_PGBOUNCER_PORT is not set: run the tests with `make test`, which starts \
             PgBouncer in transaction mode (scripts/pg-ephemeral --pgbouncer cargo test)"
        )
    })
}

/// The test database reached through PgBouncer.
fn pooled_url(db: &TestDb) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        bouncer_port(),
        db.name
    )
}

/// `autopilot` pointed at the test database through PgBouncer.
fn pooled_cmd(db: &TestDb) -> tokio::process::Command {
    let mut cmd = db.tokio_cmd();
    cmd.env("DATABASE_URL", pooled_url(db));
    cmd
}

async fn run(cmd: &mut tokio::process::Command) -> std::process::Output {
    let out = cmd.output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn assert_nothing_left_running(c: &Client) {
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status = 'running'"
        )
        .await,
        0,
        "no run left running"
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM agent_tenant_locks").await,
        0,
        "no lease left"
    );
}

#[tokio::test]
async fn every_agent_command_works_through_a_transaction_pooler() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant_with_overdue_contacts(&c, "Acme", 2, false).await;
    let cl: Uuid = c
        .query_one("SELECT id FROM clients WHERE tenant_id = $1", &[&t])
        .await
        .unwrap()
        .get(0);
    order(&c, t, cl).await;

    // check-engagement
    let out = run(pooled_cmd(&db).args(["check-engagement", "--json"])).await;
    let j: Value = json_of(&out);
    assert_eq!(j["tenants"][0]["tenant_id"], t.to_string());
    assert_eq!(j["tenants"][0]["total"], 2);
    assert_eq!(j["tenants"][0]["overdue"], 2);

    // process-orders
    let out = run(pooled_cmd(&db).args(["process-orders", "--json"])).await;
    let j: Value = json_of(&out);
    assert_eq!(j["processed"], 1, "{j}");
    assert_eq!(j["validated"], 1, "{j}");

    // run-cycle: drafts a follow-up per overdue contact.
    let out = run(pooled_cmd(&db).args(["run-cycle", "--json"])).await;
    let j: Value = json_of(&out);
    assert_eq!(j["succeeded"], 1, "{j}");
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email'"
        )
        .await,
        2
    );

    // run-cycle an hour later sends the approved one over SMTP.
    c.execute(
        "UPDATE kanban_cards SET state = 'approved'
          WHERE id = (SELECT id FROM kanban_cards WHERE type = 'send_email' ORDER BY id LIMIT 1)",
        &[],
    )
    .await
    .unwrap();
    let server = smtp::SmtpServer::start().await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let out = run(pooled_cmd(&db)
        .args(["run-cycle", "--json", "--now", &later])
        .env("SMTP_URL", server.url())
        .env("EMAIL_FROM", "agent@crm.example"))
    .await;
    let j: Value = json_of(&out);
    assert_eq!(j["succeeded"], 1, "{j}");
    assert_eq!(j["tenants"][0]["metrics"]["emails_sent"], 1, "{j}");
    assert_eq!(server.messages().len(), 1);
    assert_nothing_left_running(&c).await;

    // status
    let out = run(pooled_cmd(&db).args(["status", "--json"])).await;
    let j: Value = json_of(&out);
    assert!(j.is_object(), "{j}");

    // ack-alert
    let alert: Uuid = c
        .query_one(
            "SELECT alert_id FROM raise_agent_alert($1, 'slow_cycles', 'warning', 'slow', '{}'::jsonb, now())",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    let out = run(pooled_cmd(&db).args(["ack-alert", &alert.to_string(), "--json"])).await;
    let j: Value = json_of(&out);
    assert_eq!(j["acknowledged"], 1, "{j}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_alerts WHERE acknowledged AND acknowledged_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn two_overlapping_runners_through_a_transaction_pooler_run_each_tenant_exactly_once() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    const TENANTS: i64 = 12;
    for i in 0..TENANTS {
        tenant_with_overdue_contacts(&c, &format!("T{i}"), 2, false).await;
    }
    let mut a = pooled_cmd(&db);
    a.args(["run-cycle", "--json", "--concurrency", "4"]);
    let mut b = pooled_cmd(&db);
    b.args(["run-cycle", "--json", "--concurrency", "4"]);
    let (a, b) = tokio::join!(run(&mut a), run(&mut b));
    let (ja, jb) = (json_of(&a), json_of(&b));
    let field = |j: &Value, k: &str| j[k].as_i64().unwrap();
    assert_eq!(field(&ja, "failed") + field(&jb, "failed"), 0, "{ja} {jb}");
    assert_eq!(
        field(&ja, "succeeded") + field(&jb, "succeeded"),
        TENANTS,
        "{ja} {jb}"
    );
    assert_eq!(
        field(&ja, "skipped") + field(&jb, "skipped"),
        TENANTS,
        "{ja} {jb}"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        TENANTS
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(DISTINCT tenant_id) FROM agent_autonomous_runs WHERE status = 'completed'"
        )
        .await,
        TENANTS
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email'"
        )
        .await,
        2 * TENANTS
    );
    assert_nothing_left_running(&c).await;
}

#[tokio::test]
async fn migrate_through_a_transaction_pooler_stops_naming_the_direct_port_and_changes_nothing() {
    let db = TestDb::empty().await;
    let c = db.client().await;
    let out = pooled_cmd(&db).arg("migrate").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: migrate needs a direct or session-mode connection"));
    assert!(stderr.contains("transaction-mode pooler"), "{stderr}");
    assert!(stderr.contains("5432"), "{stderr}");
    let tracking: Option<String> = c
        .query_one("SELECT to_regclass('autopilot_migrations')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tracking, None, "nothing was created");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_probe_tells_a_transaction_pooler_from_a_direct_connection() {
    let db = TestDb::new().await;
    let pooled = DbSettings::resolve(Some(&pooled_url(&db))).unwrap();
    let direct = DbSettings::resolve(Some(&db.url)).unwrap();
    assert!(matches!(
        autopilot::db::probe_pooling(&pooled).await.unwrap(),
        Pooling::Transaction { .. }
    ));
    assert_eq!(
        autopilot::db::probe_pooling(&direct).await.unwrap(),
        Pooling::Session
    );
    assert!(autopilot::db::behind_transaction_pooler(&pooled)
        .await
        .unwrap());
    assert!(!autopilot::db::behind_transaction_pooler(&direct)
        .await
        .unwrap());
    // Statements are unnamed by default, prepared only when the operator says the
    // connection is direct or session-pooled.
    assert_eq!(autopilot::db::statements_for(&pooled), Statements::Unnamed);
    assert_eq!(autopilot::db::statements_for(&direct), Statements::Unnamed);
    let mut session = direct.clone();
    session.pooler = autopilot::db::PoolerSetting::Session;
    assert_eq!(
        autopilot::db::statements_for(&session),
        Statements::Prepared
    );
    // What `doctor` shows.
    let r = autopilot::db::connection_report(&pooled).await.unwrap();
    assert_eq!(r.pooling, "transaction");
    assert_eq!(r.target, format!("127.0.0.1:{}", bouncer_port()));
    assert_eq!(r.encrypted, None);
    let r = autopilot::db::connection_report(&direct).await.unwrap();
    assert_eq!(r.pooling, "session");
    assert!(r.server_version.starts_with("15"), "{r:?}");
    assert!(!r.in_recovery);
    assert_eq!(r.database, db.name);
}

#[tokio::test]
async fn pooled_connections_behind_the_pooler_keep_no_prepared_statement() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    contact(&c, t, cl, Some("a@acme.example"), None, false).await;
    let settings = DbSettings::resolve(Some(&pooled_url(&db))).unwrap();
    let pool = settings.pool(2).unwrap();
    let conn = autopilot::db::get(&pool, &settings).await.unwrap();
    assert_eq!(conn.statements(), Statements::Unnamed);
    let now = chrono::Utc::now();
    for _ in 0..3 {
        autopilot::engagement::ensure_clocks(&*conn, t, now)
            .await
            .unwrap();
        autopilot::engagement::refresh_scores(&*conn, t, now)
            .await
            .unwrap();
    }
    // The server session this statement lands on holds no prepared statement.
    use autopilot::db::Sql;
    let prepared: i64 = conn
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(prepared, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM engagement_clocks").await, 1);
}

/// The Supabase URLs of docs/production.md.
fn documented_supabase_urls() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/production.md"))
        .unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("DATABASE_URL='"))
        .filter_map(|l| l.strip_suffix('\''))
        .filter(|u| u.contains("pooler.supabase.com"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_documented_supabase_urls_resolve_and_migrate_refuses_the_transaction_pooler() {
    let urls = documented_supabase_urls();
    assert_eq!(urls.len(), 2, "{urls:?}");
    let ports: Vec<u16> = urls
        .iter()
        .map(|u| {
            let s = DbSettings::resolve(Some(u)).unwrap();
            assert_eq!(s.user(), "postgres.PROJECT_REF");
            assert_eq!(s.dbname(), "postgres");
            assert_eq!(s.ssl_mode, autopilot::db::SslMode::VerifyFull);
            s.targets[0].port
        })
        .collect();
    assert_eq!(ports, vec![5432, 6543]);
    // Said to be a transaction pooler, migrate stops before connecting, naming 5432.
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", &urls[1])
        .env("AUTOPILOT_POOLER", "transaction")
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("port 5432 (Supabase"), "{stderr}");
    assert!(!stderr.contains("PASSWORD"), "{stderr}");
}
