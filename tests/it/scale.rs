//! Scale readiness (issue 16), proved on plain PostgreSQL from the catalog and from plans:
//! the agent's tables can be distributed by tenant_id on Citus (every primary key and
//! unique constraint includes tenant_id, every foreign key between tenant-owned tables is
//! co-located on it, the global tables are listed as reference tables with a reason), and
//! the binary's time-ranged statements on the partitioned history tables read only the
//! partitions their range needs.

use crate::common::*;
use tokio_postgres::Client;
use uuid::Uuid;

/// Tables migrate creates that are not distributed by tenant: Citus reference tables (a copy
/// on every node) or coordinator-only bookkeeping, each with the reason.
const REFERENCE_TABLES: &[(&str, &str)] = &[
    (
        "system_config",
        "one global row (the kill switch), read by every cycle",
    ),
    (
        "autopilot_migrations",
        "migrate's own ledger, written by migrate on the coordinator",
    ),
    (
        "autopilot_migration_objects",
        "migrate's own ledger of created objects",
    ),
    (
        "tenants",
        "the distribution key's own table: distributed by id (= tenant_id)",
    ),
];

/// The host's tables (SPEC §2): the host owns their keys; the agent only checks that what it
/// references of them is tenant-scoped.
const HOST_TABLES: &[&str] = &[
    "profiles",
    "clients",
    "contacts",
    "products",
    "orders",
    "kanban_cards",
    "email_suppressions",
];

/// The agent's own tables: every table or partitioned parent in public that migrate
/// recorded in its ledger, minus the reference and host tables above.
async fn agent_tables(c: &Client) -> Vec<String> {
    let excluded: Vec<String> = REFERENCE_TABLES
        .iter()
        .map(|(t, _)| t.to_string())
        .chain(HOST_TABLES.iter().map(|t| t.to_string()))
        .collect();
    c.query(
        "SELECT c.relname::text FROM pg_class c
         JOIN autopilot_migration_objects l ON l.kind = 'relation' AND l.identity = format('%I.%I', 'public', c.relname)
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND NOT (c.relname = ANY ($1))
         ORDER BY 1",
        &[&excluded],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn every_agent_table_has_a_non_null_tenant_id_to_distribute_by() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let tables = agent_tables(&c).await;

    let without: Vec<String> = c
        .query(
            "SELECT t FROM unnest($1::text[]) t
             WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                               WHERE a.attrelid = format('public.%I', t)::regclass
                                 AND a.attname = 'tenant_id' AND a.attnotnull AND NOT a.attisdropped)",
            &[&tables],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    assert!(
        tables.contains(&"agent_autonomous_runs".to_string()) && tables.len() >= 12,
        "{tables:?}"
    );
    assert_eq!(without, Vec::<String>::new());
}

#[tokio::test]
async fn every_primary_key_and_unique_index_of_an_agent_table_includes_tenant_id() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let tables = agent_tables(&c).await;

    let offending: Vec<String> = c
        .query(
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY ($1) AND i.indisunique
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND a.attnum = ANY (i.indkey))
             ORDER BY 1",
            &[&tables],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    assert_eq!(offending, Vec::<String>::new());
}

#[tokio::test]
async fn every_foreign_key_from_an_agent_table_is_co_located_on_tenant_id() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let tables = agent_tables(&c).await;

    // Referencing side an agent table; referenced side any tenant-owned table (agent or
    // host): tenant_id must pair with tenant_id (tenants: with its id).
    let offending: Vec<String> = c
        .query(
            "SELECT k.conname::text FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             WHERE k.contype = 'f' AND c.relnamespace = 'public'::regnamespace AND c.relname = ANY ($1)
               AND NOT EXISTS (
                   SELECT 1 FROM generate_subscripts(k.conkey, 1) s
                   WHERE (SELECT a.attname FROM pg_attribute a
                          WHERE a.attrelid = k.conrelid AND a.attnum = k.conkey[s]) = 'tenant_id'
                     AND (SELECT CASE WHEN k.confrelid = 'public.tenants'::regclass AND a.attname = 'id'
                                      THEN 'tenant_id' ELSE a.attname END
                          FROM pg_attribute a
                          WHERE a.attrelid = k.confrelid AND a.attnum = k.confkey[s]) = 'tenant_id')
             ORDER BY 1",
            &[&tables],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    assert_eq!(offending, Vec::<String>::new());
}

#[tokio::test]
async fn the_reference_tables_are_the_only_tables_without_tenant_id_and_hold_no_tenant_rows() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let reference: Vec<String> = REFERENCE_TABLES
        .iter()
        .map(|(t, _)| t.to_string())
        .collect();

    let with_tenant: Vec<String> = c
        .query(
            "SELECT t FROM unnest($1::text[]) t
             WHERE t <> 'tenants' AND EXISTS (SELECT 1 FROM pg_attribute a
                          WHERE a.attrelid = format('public.%I', t)::regclass AND a.attname = 'tenant_id')",
            &[&reference],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    assert_eq!(with_tenant, Vec::<String>::new());
}

// Partition pruning ----------------------------------------------------------------------

/// Partitions an EXPLAIN names (partitions live in schema autopilot_history).
fn partitions_in(plan: &str, table: &str) -> Vec<String> {
    let mut found: Vec<String> = plan
        .split_whitespace()
        .filter(|w| w.starts_with(&format!("{table}_p")) || *w == format!("{table}_default"))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

async fn explain(
    c: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    c.query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn time_ranged_statements_read_only_the_partitions_of_their_range() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    // Six past months and weeks of partitions (prune keeps them back to its retention).
    c.batch_execute(
        "SELECT agent_history_create_partition('public.agent_autonomous_runs', now() - make_interval(months => m))
         FROM generate_series(1, 6) m;
         SELECT agent_history_create_partition('public.email_provider_failures', now() - make_interval(weeks => w))
         FROM generate_series(1, 6) w;",
    )
    .await
    .unwrap();
    let now = chrono::Utc::now();
    // The binary's own statements: the alert rules' runs of the last 24 hours, and the
    // provider failures of the last hour (the breaker's and the rules' count).
    let runs_plan = explain(
        &c,
        include_str!("../../src/sql/alerts/window_figures.sql"),
        &[&t, &now],
    )
    .await;
    let hour_ago = now - chrono::Duration::hours(1);
    let failures_plan = explain(
        &c,
        include_str!("../../src/sql/alerts/provider_failures_between.sql"),
        &[&t, &hour_ago, &now],
    )
    .await;

    let before_range: Vec<(String, String)> = c
        .query(
            "SELECT p.partition::text, 'runs' FROM agent_history_partitions('public.agent_autonomous_runs') p
             WHERE p.range_to <= $1::timestamptz - interval '24 hours' OR p.range_from > $1::timestamptz
             UNION ALL
             SELECT p.partition::text, 'failures' FROM agent_history_partitions('public.email_provider_failures') p
             WHERE p.range_to <= $1::timestamptz - interval '1 hour' OR p.range_from > $1::timestamptz",
            &[&now],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let runs_read = partitions_in(&runs_plan, "agent_autonomous_runs");
    let failures_read = partitions_in(&failures_plan, "email_provider_failures");

    assert!(before_range.len() >= 6 + 6, "{before_range:?}");
    for (p, which) in &before_range {
        let name = p.rsplit('.').next().unwrap();
        let read = if which == "runs" {
            &runs_read
        } else {
            &failures_read
        };
        assert!(
            !read.contains(&name.to_string()),
            "{name} read:\n{runs_plan}\n{failures_plan}"
        );
    }
    // A closed range inside the partitions that exist reads one or two partitions, never
    // the DEFAULT one.
    for (read, default, plan) in [
        (&runs_read, "agent_autonomous_runs_default", &runs_plan),
        (
            &failures_read,
            "email_provider_failures_default",
            &failures_plan,
        ),
    ] {
        assert!(
            (1..=2).contains(&read.len()) && !read.contains(&default.to_string()),
            "{plan}"
        );
    }
}

#[tokio::test]
async fn migrate_turns_existing_history_into_partitions_without_losing_a_row() {
    // A database migrated up to the release before partitioning, with history in it.
    let db = TestDb::empty().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE public.autopilot_migrations (version bigint PRIMARY KEY, name text NOT NULL,
           checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
           execution_ms bigint NOT NULL)",
    )
    .await
    .unwrap();
    for (name, sql) in autopilot::schema::MIGRATIONS
        .iter()
        .take_while(|(name, _)| !name.starts_with("20261203160100"))
    {
        c.batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e:?}"));
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        c.execute(
            "INSERT INTO autopilot_migrations (version, name, checksum, execution_ms) VALUES ($1, $2, $3, 0)",
            &[&version, &name.trim_end_matches(".sql"), &autopilot::schema::checksum(sql)],
        )
        .await
        .unwrap();
    }
    let t = tenant(&c, "History", true).await;
    let runs: Vec<Uuid> = c
        .query(
            "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, status, started_at, completed_at)
             SELECT $1, n, 'completed', now() - make_interval(days => 95 - n * 45),
                    now() - make_interval(days => 95 - n * 45) + interval '1 minute'
             FROM generate_series(1, 2) n
             RETURNING id",
            &[&t],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    c.execute(
        "INSERT INTO agent_hourly_reflections (tenant_id, run_id, summary) VALUES ($1, $2, 'old')",
        &[&t, &runs[0]],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type, created_at)
         SELECT $1, 'timeout', now() - make_interval(days => d) FROM unnest(ARRAY[1, 9, 20]) d",
        &[&t],
    )
    .await
    .unwrap();

    db.cmd().arg("migrate").assert().success();

    let kind = |table: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT relkind::text FROM pg_class WHERE oid = $1::text::regclass",
                &[&table],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    assert_eq!(kind("public.agent_autonomous_runs").await, "p");
    assert_eq!(kind("public.email_provider_failures").await, "p");
    let spread = |table: &str| format!("SELECT count(DISTINCT tableoid) FROM public.{table}");
    assert_eq!(
        count(&c, "SELECT count(*) FROM agent_autonomous_runs").await,
        2
    );
    assert_eq!(
        count(&c, &spread("agent_autonomous_runs")).await,
        2,
        "two months"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM email_provider_failures").await,
        3
    );
    assert_eq!(
        count(&c, &spread("email_provider_failures")).await,
        3,
        "three weeks"
    );
    // The reflection still names its run, and a reference to no run is still refused.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM agent_hourly_reflections h JOIN agent_autonomous_runs r
               ON r.id = h.run_id AND r.tenant_id = h.tenant_id"
        )
        .await,
        1
    );
    let dangling = c
        .execute(
            "INSERT INTO agent_hourly_reflections (tenant_id, run_id, summary) VALUES ($1, $2, 'x')",
            &[&t, &Uuid::new_v4()],
        )
        .await;
    assert!(dangling.is_err(), "a reflection of no run was accepted");
}
