//! The schema promises of the design review (tables, columns, tenant foreign keys, RLS,
//! grants, indexes and that the hot queries use them) and the schema-level known defects
//! of the original design (SPEC "Known defects" 1, 2, 7, 8, 15), against a real PostgreSQL.

use crate::common::*;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;

/// The ten tenant-owned agent tables (system_config is the eleventh, global one).
const TENANT_TABLES: [&str; 10] = [
    "agent_autonomous_runs",
    "agent_tenant_locks",
    "engagement_clocks",
    "agent_policy_violations",
    "order_processing_queue",
    "order_processing_exceptions",
    "agent_hourly_reflections",
    "agent_rate_limits",
    "agent_alerts",
    "email_provider_failures",
];

const TS: &str = "timestamp with time zone";

/// SPEC §2: every column of the original tables with its information_schema data type.
const COLUMNS: &[(&str, &[(&str, &str)])] = &[
    (
        "agent_autonomous_runs",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("cycle_number", "integer"),
            ("started_at", TS),
            ("completed_at", TS),
            ("phase", "text"),
            ("status", "text"),
            ("actions_planned", "integer"),
            ("actions_executed", "integer"),
            ("actions_blocked", "integer"),
            ("emails_sent", "integer"),
            ("cards_created", "integer"),
            ("trigger", "text"),
            ("error_message", "text"),
            ("duration_ms", "integer"),
            ("created_at", TS),
        ],
    ),
    (
        "agent_tenant_locks",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("run_id", "uuid"),
            ("locked_at", TS),
            ("expires_at", TS),
            ("lock_holder", "text"),
        ],
    ),
    (
        "engagement_clocks",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("client_id", "uuid"),
            ("contact_id", "uuid"),
            ("last_touch_at", TS),
            ("last_touch_type", "text"),
            ("last_touch_by", "uuid"),
            ("next_touch_due", TS),
            ("engagement_interval_days", "integer"),
            ("priority_score", "numeric"),
            ("created_at", TS),
            ("updated_at", TS),
        ],
    ),
    (
        "agent_policy_violations",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("run_id", "uuid"),
            ("violation_type", "text"),
            ("action_type", "text"),
            ("action_data", "jsonb"),
            ("reason", "text"),
            ("blocked", "boolean"),
            ("created_at", TS),
        ],
    ),
    (
        "order_processing_queue",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("order_id", "uuid"),
            ("status", "text"),
            ("queued_at", TS),
            ("processed_at", TS),
            ("pricing_valid", "boolean"),
            ("credit_valid", "boolean"),
            ("requirements_valid", "boolean"),
            ("auto_fixes", "jsonb"),
        ],
    ),
    (
        "order_processing_exceptions",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("order_id", "uuid"),
            ("queue_id", "uuid"),
            ("exception_type", "text"),
            ("severity", "text"),
            ("message", "text"),
            ("details", "jsonb"),
            ("resolved", "boolean"),
            ("resolved_at", TS),
            ("resolved_by", "uuid"),
            ("created_at", TS),
        ],
    ),
    (
        "agent_hourly_reflections",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("run_id", "uuid"),
            ("summary", "text"),
            ("changes", "jsonb"),
            ("metrics_delta", "jsonb"),
            ("blockers", "jsonb"),
            ("insights", "jsonb"),
            ("next_hour_priorities", "jsonb"),
            ("created_at", TS),
        ],
    ),
    (
        "agent_rate_limits",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("action_type", "text"),
            ("window_start", TS),
            ("window_end", TS),
            ("action_count", "integer"),
        ],
    ),
    (
        "agent_alerts",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("alert_type", "text"),
            ("severity", "text"),
            ("message", "text"),
            ("metadata", "jsonb"),
            ("acknowledged", "boolean"),
            ("acknowledged_at", TS),
            ("acknowledged_by", "uuid"),
            ("created_at", TS),
        ],
    ),
    (
        "email_provider_failures",
        &[
            ("id", "uuid"),
            ("tenant_id", "uuid"),
            ("error_type", "text"),
            ("error_message", "text"),
            ("provider", "text"),
            ("created_at", TS),
        ],
    ),
    (
        "system_config",
        &[("key", "text"), ("value", "jsonb"), ("updated_at", TS)],
    ),
    (
        "tenants",
        &[("agent_enabled", "boolean"), ("agent_settings", "jsonb")],
    ),
];

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// One row in every one of the ten tenant tables for `tenant` (two clocks: client-level and
/// contact-level), written as the owner.
async fn seed_every_agent_table(c: &Client, tenant: Uuid) {
    let client = client_row(c, tenant, "Acme").await;
    let contact = contact(c, tenant, client, Some("pat@example.com"), None, false).await;
    let order = order(c, tenant, client).await; // the trigger queues it
    c.execute("SELECT acquire_tenant_lock($1, 'seed', 60)", &[&tenant])
        .await
        .unwrap();
    c.execute(
        "SELECT update_engagement_clock($1, $2, $3, 'email', NULL)",
        &[&tenant, &client, &contact],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO agent_policy_violations (tenant_id, violation_type, action_type, reason)
         VALUES ($1, 'rate_limit', 'send_email', 'seed')",
        &[&tenant],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO order_processing_exceptions (tenant_id, order_id, exception_type, severity, code, message)
         VALUES ($1, $2, 'pricing', 'error', 'seed', 'seed')",
        &[&tenant, &order],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO agent_hourly_reflections (tenant_id, summary) VALUES ($1, 'seed')",
        &[&tenant],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT rate_limit_take($1, 'email_send', 5, now())",
        &[&tenant],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT raise_agent_alert($1, 'seed', 'warning', 'seed')",
        &[&tenant],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_provider_failures (tenant_id, error_type, error_message) VALUES ($1, 'timeout', 'seed')",
        &[&tenant],
    )
    .await
    .unwrap();
}

/// Two tenants with a row in every agent table each, and a profile of tenant A.
async fn two_seeded_tenants(db: &TestDb) -> (Uuid, Uuid, Uuid) {
    let c = db.client().await;
    let a = tenant(&c, "A", true).await;
    let b = tenant(&c, "B", true).await;
    seed_every_agent_table(&c, a).await;
    seed_every_agent_table(&c, b).await;
    let pa = profile(&c, a).await;
    (a, b, pa)
}

/// The distinct tenant ids `c` can see in `table`, or the error.
async fn visible_tenants(c: &Client, table: &str) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let rows = c
        .query(
            &format!("SELECT DISTINCT tenant_id FROM public.{table} ORDER BY 1"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// ---------------------------------------------------------------------------------------
// 1. Tables and columns

#[tokio::test]
async fn the_eleven_agent_tables_have_every_column_of_the_review_with_its_type() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let mut missing = Vec::new();
    for (table, columns) in COLUMNS {
        for (column, ty) in *columns {
            let found: Option<String> = c
                .query_opt(
                    "SELECT data_type FROM information_schema.columns
                     WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
                    &[table, column],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            if found.as_deref() != Some(*ty) {
                missing.push(format!("{table}.{column}: want {ty}, found {found:?}"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
    assert_eq!(COLUMNS.len(), 12, "11 agent tables + tenants");
}

#[tokio::test]
async fn columns_of_the_review_have_its_defaults() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "T", true).await;
    let client = client_row(&c, t, "Acme").await;
    let o = order(&c, t, client).await;
    let run: Uuid = c
        .query_one("SELECT acquire_tenant_lock($1, 'h', 60)", &[&t])
        .await
        .unwrap()
        .get(0);
    let r = c
        .query_one(
            "SELECT status, actions_planned + actions_executed + actions_blocked + emails_sent + cards_created
             FROM agent_autonomous_runs WHERE id = $1",
            &[&run],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "running");
    assert_eq!(r.get::<_, i32>(1), 0);
    let r = c
        .query_one(
            "INSERT INTO engagement_clocks (tenant_id, client_id) VALUES ($1, $2)
             RETURNING engagement_interval_days",
            &[&t, &client],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i32>(0), 21);
    let r = c
        .query_one(
            "INSERT INTO agent_policy_violations (tenant_id, violation_type, reason) VALUES ($1, 'x', 'y')
             RETURNING blocked",
            &[&t],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0));
    let r = c
        .query_one(
            "SELECT status, auto_fixes FROM order_processing_queue WHERE order_id = $1",
            &[&o],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "pending");
    assert_eq!(r.get::<_, Value>(1), serde_json::json!([]));
    let r = c
        .query_one(
            "INSERT INTO order_processing_exceptions (tenant_id, order_id, exception_type, severity, code, message)
             VALUES ($1, $2, 'other', 'info', 'c', 'm') RETURNING resolved",
            &[&t, &o],
        )
        .await
        .unwrap();
    assert!(!r.get::<_, bool>(0));
    let r = c
        .query_one(
            "INSERT INTO agent_alerts (tenant_id, alert_type, severity, message) VALUES ($1, 'x', 'info', 'm')
             RETURNING acknowledged",
            &[&t],
        )
        .await
        .unwrap();
    assert!(!r.get::<_, bool>(0));
    let r = c
        .query_one(
            "SELECT agent_enabled, agent_settings FROM tenants WHERE id = $1",
            &[&tenant(&c, "D", false).await],
        )
        .await
        .unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_eq!(r.get::<_, Value>(1), serde_json::json!({}));
}

// ---------------------------------------------------------------------------------------
// 2. tenant_id NOT NULL, FK to tenants ON DELETE CASCADE

#[tokio::test]
async fn every_tenant_table_has_a_not_null_tenant_id_referencing_tenants_on_delete_cascade() {
    let db = TestDb::new().await;
    let c = db.client().await;
    for table in TENANT_TABLES {
        let qualified = format!("public.{table}");
        let not_null: bool = c
            .query_one(
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = 'tenant_id'",
                &[&qualified],
            )
            .await
            .unwrap()
            .get(0);
        assert!(not_null, "{table}.tenant_id is nullable");
        let cascading_fks = count_with(
            &c,
            "SELECT count(*) FROM pg_constraint k
             WHERE k.conrelid = $1::text::regclass AND k.contype = 'f'
               AND k.confrelid = 'public.tenants'::regclass AND k.confdeltype = 'c'
               AND k.conkey = ARRAY[(SELECT attnum FROM pg_attribute
                                     WHERE attrelid = $1::text::regclass AND attname = 'tenant_id')]",
            &[&qualified],
        )
        .await;
        assert_eq!(
            cascading_fks, 1,
            "{table}: FOREIGN KEY (tenant_id) REFERENCES tenants ON DELETE CASCADE"
        );
    }
}

async fn count_with(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    c.query_one(sql, params).await.unwrap().get(0)
}

#[tokio::test]
async fn deleting_a_tenant_deletes_its_rows_of_every_agent_table_and_nothing_else() {
    let db = TestDb::new().await;
    let (a, b, _) = two_seeded_tenants(&db).await;
    let c = db.client().await;
    for table in TENANT_TABLES {
        let sql = format!("SELECT count(*) FROM public.{table} WHERE tenant_id = $1");
        assert!(
            count_with(&c, &sql, &[&a]).await > 0,
            "seed missing in {table}"
        );
    }
    c.execute("DELETE FROM tenants WHERE id = $1", &[&a])
        .await
        .unwrap();
    for table in TENANT_TABLES {
        let sql = format!("SELECT count(*) FROM public.{table} WHERE tenant_id = $1");
        assert_eq!(
            count_with(&c, &sql, &[&a]).await,
            0,
            "{table} kept rows of the deleted tenant"
        );
        assert!(
            count_with(&c, &sql, &[&b]).await > 0,
            "{table} lost the other tenant's rows"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. RLS

#[tokio::test]
async fn rls_is_enabled_with_a_tenant_isolation_and_a_service_role_policy_on_the_ten_tables() {
    let db = TestDb::new().await;
    let c = db.client().await;
    for table in TENANT_TABLES {
        let rls: bool = c
            .query_one(
                "SELECT relrowsecurity FROM pg_class WHERE oid = $1::text::regclass",
                &[&format!("public.{table}")],
            )
            .await
            .unwrap()
            .get(0);
        assert!(rls, "RLS not enabled on {table}");
        let isolation = count_with(
            &c,
            "SELECT count(*) FROM pg_policies
             WHERE schemaname = 'public' AND tablename = $1 AND roles = '{authenticated}'::name[]
               AND cmd = 'ALL' AND qual LIKE '%( SELECT auth.uid()%' AND qual LIKE '%profiles%'
               AND with_check LIKE '%( SELECT auth.uid()%'",
            &[&table],
        )
        .await;
        assert_eq!(
            isolation, 1,
            "{table}: tenant isolation policy for authenticated"
        );
        let service = count_with(
            &c,
            "SELECT count(*) FROM pg_policies
             WHERE schemaname = 'public' AND tablename = $1 AND roles = '{service_role}'::name[] AND cmd = 'ALL'",
            &[&table],
        )
        .await;
        assert_eq!(service, 1, "{table}: service_role policy");
        let other = count_with(
            &c,
            "SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = $1
               AND NOT (roles <@ '{authenticated,service_role}'::name[])",
            &[&table],
        )
        .await;
        assert_eq!(
            other, 0,
            "{table}: a policy for another role (anon or public)"
        );
    }
}

#[tokio::test]
async fn authenticated_user_sees_only_its_own_tenants_rows_in_every_agent_table() {
    let db = TestDb::new().await;
    let (a, _b, pa) = two_seeded_tenants(&db).await;
    let user = db.as_authenticated(pa).await;
    for table in TENANT_TABLES {
        assert_eq!(
            visible_tenants(&user, table).await.unwrap(),
            vec![a],
            "{table}"
        );
    }
}

#[tokio::test]
async fn authenticated_user_identified_by_jwt_claims_json_sees_only_its_own_tenant() {
    let db = TestDb::new().await;
    let (a, _b, pa) = two_seeded_tenants(&db).await;
    let user = db.client().await;
    let claims = serde_json::json!({"sub": pa.to_string(), "role": "authenticated"}).to_string();
    user.batch_execute(&format!(
        "SET ROLE authenticated; SET request.jwt.claims = '{claims}';"
    ))
    .await
    .unwrap();
    for table in ["agent_alerts", "agent_autonomous_runs", "engagement_clocks"] {
        assert_eq!(
            visible_tenants(&user, table).await.unwrap(),
            vec![a],
            "{table}"
        );
    }
    let b_alert = user
        .execute(
            "INSERT INTO agent_alerts (tenant_id, alert_type, severity, message)
             SELECT id, 'x', 'info', 'm' FROM (SELECT $1::uuid AS id) s",
            &[&_b],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&b_alert), "42501");
}

#[tokio::test]
async fn authenticated_user_cannot_insert_bookkeeping_rows_for_any_tenant() {
    let db = TestDb::new().await;
    let (a, b, pa) = two_seeded_tenants(&db).await;
    let user = db.as_authenticated(pa).await;
    let insert = "INSERT INTO agent_alerts (tenant_id, alert_type, severity, message) VALUES ($1, 'manual', 'info', 'm')";
    // Alerts are raised by the agent only: refused for the other tenant and its own.
    for tenant in [b, a] {
        let err = user.execute(insert, &[&tenant]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err:?}");
    }
    let err = user
        .execute(
            "INSERT INTO agent_policy_violations (tenant_id, violation_type, reason) VALUES ($1, 'x', 'y')",
            &[&b],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    // Moving an own row to the other tenant is refused too (tenant_id is not writable).
    let err = user
        .execute(
            "UPDATE agent_alerts SET tenant_id = $1 WHERE tenant_id = $2",
            &[&b, &a],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[tokio::test]
async fn authenticated_user_updates_and_deletes_no_row_of_another_tenant() {
    let db = TestDb::new().await;
    let (_a, b, pa) = two_seeded_tenants(&db).await;
    let user = db.as_authenticated(pa).await;
    let owner = db.client().await;
    assert_eq!(
        user.execute("UPDATE agent_alerts SET acknowledged = true, acknowledged_at = now() WHERE tenant_id = $1", &[&b])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        user.execute(
            "UPDATE order_processing_exceptions SET resolved = true WHERE tenant_id = $1",
            &[&b]
        )
        .await
        .unwrap(),
        0
    );
    // The agent's bookkeeping is not writable at all, whoever's rows.
    for sql in [
        "UPDATE agent_autonomous_runs SET error_message = 'x' WHERE tenant_id = $1",
        "DELETE FROM engagement_clocks WHERE tenant_id = $1",
    ] {
        let err = user.execute(sql, &[&b]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
    }
    assert_eq!(
        count_with(
            &owner,
            "SELECT count(*) FROM agent_alerts WHERE tenant_id = $1 AND NOT acknowledged",
            &[&b]
        )
        .await,
        1
    );
    assert_eq!(
        count_with(
            &owner,
            "SELECT count(*) FROM engagement_clocks WHERE tenant_id = $1",
            &[&b]
        )
        .await,
        2
    );
}

#[tokio::test]
async fn authenticated_without_a_profile_sees_nothing() {
    let db = TestDb::new().await;
    two_seeded_tenants(&db).await;
    let stranger = db.as_authenticated(Uuid::new_v4()).await;
    for table in TENANT_TABLES {
        assert!(
            visible_tenants(&stranger, table).await.unwrap().is_empty(),
            "{table}"
        );
    }
}

#[tokio::test]
async fn authenticated_user_cannot_read_another_tenants_profiles() {
    let db = TestDb::new().await;
    let (_a, b, pa) = two_seeded_tenants(&db).await;
    let c = db.client().await;
    profile(&c, b).await;
    let user = db.as_authenticated(pa).await;
    match user
        .query(
            "SELECT email, full_name FROM profiles WHERE tenant_id = $1",
            &[&b],
        )
        .await
    {
        Err(e) => assert_eq!(sqlstate(&e), "42501", "{e:?}"),
        Ok(rows) => assert!(
            rows.is_empty(),
            "read {} profiles of another tenant",
            rows.len()
        ),
    }
}

#[tokio::test]
async fn anon_gets_no_row_of_any_agent_table() {
    let db = TestDb::new().await;
    two_seeded_tenants(&db).await;
    let anon = db.as_anon().await;
    for table in TENANT_TABLES {
        match visible_tenants(&anon, table).await {
            Err(e) => assert_eq!(sqlstate(&e), "42501", "{table}: {e:?}"),
            Ok(rows) => assert!(rows.is_empty(), "anon read {table}: {rows:?}"),
        }
    }
    match visible_tenants(&anon, "engagement_clock_status").await {
        Err(e) => assert_eq!(sqlstate(&e), "42501", "{e:?}"),
        Ok(rows) => assert!(
            rows.is_empty(),
            "anon read engagement_clock_status: {rows:?}"
        ),
    }
}

#[tokio::test]
async fn service_role_sees_every_tenants_rows() {
    let db = TestDb::new().await;
    let (a, b, _) = two_seeded_tenants(&db).await;
    let service = db.as_service_role().await;
    let mut both = vec![a, b];
    both.sort();
    for table in TENANT_TABLES {
        assert_eq!(
            visible_tenants(&service, table).await.unwrap(),
            both,
            "{table}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. system_config (defect 8)

#[tokio::test]
async fn system_config_holds_the_kill_switch_off_by_default() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let v: Value = c
        .query_one(
            "SELECT value FROM system_config WHERE key = 'agent_config'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        v,
        serde_json::json!({"global_enabled": false, "kill_switch_reason": null})
    );
}

#[tokio::test]
async fn anon_and_authenticated_can_neither_read_nor_change_system_config() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let p = profile(&c, t).await;
    for (who, role) in [
        ("anon", db.as_anon().await),
        ("authenticated", db.as_authenticated(p).await),
    ] {
        for sql in [
            "SELECT value FROM system_config",
            "UPDATE system_config SET value = '{\"global_enabled\": true}' WHERE key = 'agent_config'",
            "INSERT INTO system_config (key, value) VALUES ('evil', '{}')",
            "DELETE FROM system_config",
        ] {
            let err = role.execute(sql, &[]).await.expect_err(&format!("{who} ran {sql}"));
            assert_eq!(sqlstate(&err), "42501", "{who}: {sql}: {err:?}");
        }
    }
    let v: Value = c
        .query_one(
            "SELECT value FROM system_config WHERE key = 'agent_config'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v["global_enabled"], Value::Bool(false));
    assert_eq!(count(&c, "SELECT count(*) FROM system_config").await, 1);
}

#[tokio::test]
async fn service_role_can_read_system_config_but_not_flip_the_kill_switch() {
    let db = TestDb::new().await;
    let service = db.as_service_role().await;
    let v: Value = service
        .query_one(
            "SELECT value FROM system_config WHERE key = 'agent_config'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v["global_enabled"], Value::Bool(false));
    let err = service
        .execute("UPDATE system_config SET value = '{\"global_enabled\": true}' WHERE key = 'agent_config'", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = service
        .execute(
            "INSERT INTO system_config (key, value) VALUES ('x', '{}')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

// ---------------------------------------------------------------------------------------
// 5. Grants

#[tokio::test]
async fn service_role_writes_the_ten_tables_and_authenticated_only_reads_resolves_and_acknowledges()
{
    let db = TestDb::new().await;
    let c = db.client().await;
    let has = |role: &'static str, table: String, privilege: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT has_table_privilege($1, $2, $3)",
                &[&role, &table, &privilege],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    };
    for table in TENANT_TABLES {
        let t = format!("public.{table}");
        for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            assert!(
                has("service_role", t.clone(), privilege).await,
                "service_role lacks {privilege} on {table}"
            );
        }
        assert!(has("authenticated", t.clone(), "SELECT").await);
        for privilege in ["INSERT", "UPDATE", "DELETE", "TRUNCATE"] {
            assert!(
                !has("authenticated", t.clone(), privilege).await,
                "authenticated may {privilege} {table}"
            );
        }
        assert!(
            !has("anon", t.clone(), "SELECT").await,
            "anon may select {table}"
        );
    }
    // Column by column: what a person does in the product.
    for (table, column, allowed) in [
        ("order_processing_exceptions", "resolved", true),
        ("order_processing_exceptions", "resolved_by", true),
        ("order_processing_exceptions", "message", false),
        ("order_processing_exceptions", "tenant_id", false),
        ("agent_alerts", "acknowledged", true),
        ("agent_alerts", "acknowledged_by", true),
        ("agent_alerts", "message", false),
        ("agent_rate_limits", "action_count", false),
        ("engagement_clocks", "next_touch_due", false),
    ] {
        let ok: bool = c
            .query_one(
                "SELECT has_column_privilege('authenticated', $1, $2, 'UPDATE')",
                &[&format!("public.{table}"), &column],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(ok, allowed, "authenticated UPDATE of {table}.{column}");
    }
}

// ---------------------------------------------------------------------------------------
// 6. Indexes

/// (table, index, is_unique, fragments its definition must contain)
const INDEXES: &[(&str, &str, bool, &[&str])] = &[
    (
        "agent_autonomous_runs",
        "agent_runs_tenant_started_idx",
        false,
        &["(tenant_id, started_at DESC)"],
    ),
    (
        "agent_autonomous_runs",
        "agent_runs_tenant_status_idx",
        false,
        &["(tenant_id, status)"],
    ),
    (
        "agent_autonomous_runs",
        "agent_runs_running_idx",
        false,
        &["WHERE (status = 'running'::text)"],
    ),
    (
        "agent_tenant_locks",
        "agent_tenant_locks_tenant_id_key",
        true,
        &["(tenant_id)"],
    ),
    (
        "agent_tenant_locks",
        "agent_tenant_locks_expires_idx",
        false,
        &["(expires_at)"],
    ),
    (
        "engagement_clocks",
        "engagement_clocks_tenant_contact_key",
        true,
        &["(tenant_id, contact_id)", "WHERE (contact_id IS NOT NULL)"],
    ),
    (
        "engagement_clocks",
        "engagement_clocks_tenant_client_level_key",
        true,
        &["(tenant_id, client_id)", "WHERE (contact_id IS NULL)"],
    ),
    (
        "engagement_clocks",
        "engagement_clocks_tenant_due_idx",
        false,
        &["(tenant_id, next_touch_due)"],
    ),
    // One queue entry per order, unique within the tenant (a global rule would tell a
    // tenant that an order id exists elsewhere); order_id alone is indexed for lookups.
    (
        "order_processing_queue",
        "order_processing_queue_order_idx",
        false,
        &["(order_id)"],
    ),
    (
        "order_processing_queue",
        "order_processing_queue_tenant_order_key",
        true,
        &["(tenant_id, order_id)"],
    ),
    (
        "order_processing_queue",
        "order_processing_queue_pending_idx",
        false,
        &["WHERE (status = 'pending'::text)"],
    ),
    (
        "order_processing_exceptions",
        "order_processing_exceptions_unresolved_idx",
        false,
        &["WHERE (NOT resolved)"],
    ),
    (
        "agent_rate_limits",
        "agent_rate_limits_tenant_action_window_key",
        true,
        &["(tenant_id, action_type, window_start)"],
    ),
    (
        "agent_rate_limits",
        "agent_rate_limits_window_end_idx",
        false,
        &["(window_end)"],
    ),
    (
        "agent_alerts",
        "agent_alerts_one_open_per_type_idx",
        true,
        &["(tenant_id, alert_type)", "WHERE (NOT acknowledged)"],
    ),
    (
        "email_provider_failures",
        "email_provider_failures_tenant_created_idx",
        false,
        &["(tenant_id, created_at DESC)"],
    ),
];

#[tokio::test]
async fn the_indexes_named_in_the_review_exist() {
    let db = TestDb::new().await;
    let c = db.client().await;
    for (table, index, unique, fragments) in INDEXES {
        let def: String = c
            .query_opt(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1 AND indexname = $2",
                &[table, index],
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("index {index} on {table} missing"))
            .get(0);
        assert_eq!(def.starts_with("CREATE UNIQUE INDEX"), *unique, "{def}");
        for f in *fragments {
            assert!(def.contains(f), "{index}: {def} lacks {f}");
        }
    }
}

/// Every (node type, index name) of a plan, walked recursively.
fn plan_nodes(plan: &Value, out: &mut Vec<(String, String)>) {
    let node = plan["Node Type"].as_str().unwrap_or_default().to_string();
    let index = plan["Index Name"].as_str().unwrap_or_default().to_string();
    out.push((node, index));
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            plan_nodes(child, out);
        }
    }
}

async fn assert_uses_index(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)], index: &str) {
    let explained: Value = c
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e:?}"))
        .get(0);
    let mut nodes = Vec::new();
    plan_nodes(&explained[0]["Plan"], &mut nodes);
    assert!(
        // A partitioned table's index is read through its partitions' indexes, named
        // after it (`<index>_p<period>`, `<index>_default`).
        nodes.iter().any(|(node, name)| (name == index
            || name.starts_with(&format!("{index}_p"))
            || *name == format!("{index}_default"))
            && matches!(
                node.as_str(),
                "Index Scan" | "Index Only Scan" | "Bitmap Index Scan"
            )),
        "{sql}\nexpected a scan of {index}, plan: {nodes:?}"
    );
    assert!(
        !nodes.iter().any(|(node, _)| node == "Seq Scan"),
        "{sql}: seq scan in {nodes:?}"
    );
}

#[tokio::test]
async fn hot_queries_use_their_indexes_at_twenty_thousand_rows() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // 200 tenants x 100 rows per table, set-based; a tenant is 0.5 % of each table. The
    // queue is filled directly (trigger off for the bulk insert) so that its statuses need
    // no mass UPDATE whose dead index entries would skew the plan until a VACUUM.
    c.batch_execute(
        "INSERT INTO tenants (name) SELECT 'T' || g FROM generate_series(1, 200) g;
         INSERT INTO clients (tenant_id, company_name)
           SELECT t.id, 'C' || g FROM tenants t, generate_series(1, 100) g;
         INSERT INTO engagement_clocks (tenant_id, client_id, next_touch_due, priority_score)
           SELECT tenant_id, id, now() + ((hashtext(id::text) % 30) || ' days')::interval,
                  abs(hashtext(id::text) % 90)
           FROM clients;
         ALTER TABLE orders DISABLE TRIGGER orders_queue_new_orders;
         INSERT INTO orders (tenant_id, client_id, fee_amount, total_amount)
           SELECT tenant_id, id, 100, 100 FROM clients;
         ALTER TABLE orders ENABLE TRIGGER orders_queue_new_orders;
         INSERT INTO order_processing_queue (tenant_id, order_id, status, processed_at)
           SELECT o.tenant_id, o.id,
                  CASE WHEN cl.company_name IN ('C1', 'C2', 'C3') THEN 'pending' ELSE 'validated' END,
                  CASE WHEN cl.company_name IN ('C1', 'C2', 'C3') THEN NULL ELSE now() END
           FROM orders o JOIN clients cl ON cl.id = o.client_id;
         INSERT INTO agent_alerts (tenant_id, alert_type, severity, message, acknowledged, acknowledged_at)
           SELECT t.id, 'type_' || g, 'warning', 'm', g > 2, CASE WHEN g > 2 THEN now() END
           FROM tenants t, generate_series(1, 100) g;
         INSERT INTO agent_rate_limits (tenant_id, action_type, window_start, window_end, action_count)
           SELECT t.id, 'email_send', date_trunc('hour', now()) - g * interval '1 hour',
                  date_trunc('hour', now()) - (g - 1) * interval '1 hour', 3
           FROM tenants t, generate_series(1, 100) g;
         INSERT INTO agent_autonomous_runs (tenant_id, cycle_number, started_at, completed_at, status, phase)
           SELECT t.id, g, now() - g * interval '1 hour', now() - g * interval '1 hour' + interval '1 minute',
                  'completed', 'completed'
           FROM tenants t, generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM engagement_clocks").await,
        20_000
    );
    c.batch_execute(
        "ANALYZE engagement_clocks, order_processing_queue, agent_alerts, agent_rate_limits, agent_autonomous_runs",
    )
    .await
    .unwrap();
    let t: Uuid = c
        .query_one("SELECT id FROM tenants ORDER BY name LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let window: chrono::DateTime<chrono::Utc> = c
        .query_one("SELECT date_trunc('hour', now()) - interval '5 hours'", &[])
        .await
        .unwrap()
        .get(0);

    // The body of get_engagement_violations_at (a SQL function with SET is never inlined).
    assert_uses_index(
        &c,
        "SELECT c.id, c.client_id, c.contact_id, engagement_days_overdue(c.next_touch_due, now()) AS days_overdue,
                c.priority_score, c.next_touch_due
         FROM engagement_clocks c
         WHERE c.tenant_id = $1 AND c.next_touch_due <= now()
         ORDER BY days_overdue DESC, c.priority_score DESC, c.next_touch_due, c.id",
        &[&t],
        "engagement_clocks_tenant_due_idx",
    )
    .await;
    assert_uses_index(
        &c,
        "SELECT id, order_id FROM order_processing_queue
         WHERE tenant_id = $1 AND status = 'pending' ORDER BY queued_at LIMIT 100",
        &[&t],
        "order_processing_queue_pending_idx",
    )
    .await;
    assert_uses_index(
        &c,
        "SELECT id, alert_type FROM agent_alerts WHERE tenant_id = $1 AND NOT acknowledged",
        &[&t],
        "agent_alerts_one_open_per_type_idx",
    )
    .await;
    assert_uses_index(
        &c,
        "SELECT action_count FROM agent_rate_limits
         WHERE tenant_id = $1 AND action_type = 'email_send' AND window_start = $2",
        &[&t, &window],
        "agent_rate_limits_tenant_action_window_key",
    )
    .await;
    assert_uses_index(
        &c,
        "SELECT id, status FROM agent_autonomous_runs WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT 20",
        &[&t],
        "agent_runs_tenant_started_idx",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Known defect 1: is_compliant / days_overdue derived at query time

#[tokio::test]
async fn days_overdue_and_is_compliant_are_derived_at_query_time_by_the_view() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let late_client = client_row(&c, t, "Late").await;
    let fresh_client = client_row(&c, t, "Fresh").await;
    let late: Uuid = c
        .query_one(
            "INSERT INTO engagement_clocks (tenant_id, client_id, next_touch_due)
             VALUES ($1, $2, now() - interval '3 days 12 hours') RETURNING id",
            &[&t, &late_client],
        )
        .await
        .unwrap()
        .get(0);
    let fresh: Uuid = c
        .query_one(
            "INSERT INTO engagement_clocks (tenant_id, client_id, next_touch_due)
             VALUES ($1, $2, now() + interval '1 day') RETURNING id",
            &[&t, &fresh_client],
        )
        .await
        .unwrap()
        .get(0);
    let status = |id: Uuid| {
        let c = &c;
        async move {
            let r = c
                .query_one(
                    "SELECT days_overdue, is_compliant FROM engagement_clock_status WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (r.get::<_, i32>(0), r.get::<_, bool>(1))
        }
    };
    assert_eq!(status(late).await, (3, false));
    assert_eq!(status(fresh).await, (0, true));
    // Moving the due date changes the derived values at once (nothing stored goes stale).
    c.execute("UPDATE engagement_clocks SET next_touch_due = now() - interval '10 days 1 hour' WHERE id = $1", &[&fresh])
        .await
        .unwrap();
    assert_eq!(status(fresh).await, (10, false));
    // And engagement_clocks stores no such column, generated or not.
    let stored = count(
        &c,
        "SELECT count(*) FROM pg_attribute
         WHERE attrelid = 'public.engagement_clocks'::regclass AND attnum > 0 AND NOT attisdropped
           AND (attgenerated <> '' OR attname IN ('is_compliant', 'days_overdue'))",
    )
    .await;
    assert_eq!(stored, 0);
}

// ---------------------------------------------------------------------------------------
// Known defect 2: re-running the security migration

#[tokio::test]
async fn security_migration_runs_twice_and_leaves_exactly_the_same_policies() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let (name, sql) = autopilot::schema::MIGRATIONS
        .iter()
        .find(|(name, _)| name.contains("security"))
        .expect("a security migration");
    let policies =
        "SELECT tablename || '.' || policyname || ' ' || roles::text || ' ' || cmd || ' '
                           || coalesce(qual, '') || ' ' || coalesce(with_check, '')
                    FROM pg_policies WHERE schemaname = 'public' ORDER BY 1";
    let list = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let before = list(c.query(policies, &[]).await.unwrap());
    for _ in 0..2 {
        c.batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
            .await
            .unwrap_or_else(|e| panic!("re-running {name}: {e:?}"));
    }
    let after = list(c.query(policies, &[]).await.unwrap());
    assert_eq!(before, after);
    // Two per tenant table (isolation + service_role) and per host table migrate created
    // (clients, contacts, products, orders, kanban_cards, email_suppressions), one on
    // system_config, and the service_role and same-tenant policies of profiles and tenants;
    // tables added by later migrations (agent_switch_log; the three inbound mail tables of
    // 20261203140000_inbound_mail.sql; agent_lease_stats of the monitoring views) have their
    // own tests.
    let original = after
        .iter()
        .filter(|p| !p.starts_with("agent_switch_log."))
        .count();
    assert_eq!(original, 37 + 6 + 2, "{after:#?}");
}

// ---------------------------------------------------------------------------------------
// Known defect 7: composite foreign keys

/// Two tenants; tenant B's client, contact and (unqueued) order.
async fn foreign_rows(c: &Client) -> (Uuid, Uuid, Uuid, Uuid, Uuid, Uuid, Uuid) {
    let a = tenant(c, "A", true).await;
    let b = tenant(c, "B", true).await;
    let a_client = client_row(c, a, "A client").await;
    let a_contact = contact(c, a, a_client, Some("a@example.com"), None, false).await;
    let b_client = client_row(c, b, "B client").await;
    let b_contact = contact(c, b, b_client, Some("b@example.com"), None, false).await;
    let b_order = order(c, b, b_client).await;
    // Without its own queue entry the unique order_id index cannot mask the foreign key.
    c.execute(
        "DELETE FROM order_processing_queue WHERE order_id = $1",
        &[&b_order],
    )
    .await
    .unwrap();
    (a, b, a_client, a_contact, b_client, b_contact, b_order)
}

#[tokio::test]
async fn agent_rows_naming_another_tenants_client_contact_or_order_are_refused_even_for_service_role(
) {
    let db = TestDb::new().await;
    let owner = db.client().await;
    let (a, _b, a_client, _a_contact, b_client, b_contact, b_order) = foreign_rows(&owner).await;
    let b_run: Uuid = owner
        .query_one("SELECT acquire_tenant_lock($1, 'b', 60)", &[&_b])
        .await
        .unwrap()
        .get(0);
    let service = db.as_service_role().await;
    let err = service
        .execute(
            "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id) VALUES ($1, $2, $3)",
            &[&a, &a_client, &b_contact],
        )
        .await
        .expect_err("clock of A's client naming B's contact");
    assert_eq!(sqlstate(&err), "23503", "{err:?}");
    let attempts: [(&str, &str, Uuid); 6] = [
        ("clock for B's client", "INSERT INTO engagement_clocks (tenant_id, client_id) VALUES ($1, $2)", b_client),
        (
            "clock for B's contact",
            "INSERT INTO engagement_clocks (tenant_id, contact_id) VALUES ($1, $2)",
            b_contact,
        ),
        (
            "exception on B's order",
            "INSERT INTO order_processing_exceptions (tenant_id, order_id, exception_type, severity, code, message)
             VALUES ($1, $2, 'pricing', 'error', 'x', 'm')",
            b_order,
        ),
        ("queue entry for B's order", "INSERT INTO order_processing_queue (tenant_id, order_id) VALUES ($1, $2)", b_order),
        (
            "violation naming B's run",
            "INSERT INTO agent_policy_violations (tenant_id, run_id, violation_type, reason) VALUES ($1, $2, 'x', 'y')",
            b_run,
        ),
        (
            "reflection naming B's run",
            "INSERT INTO agent_hourly_reflections (tenant_id, run_id, summary) VALUES ($1, $2, 's')",
            b_run,
        ),
    ];
    for (what, sql, foreign) in attempts {
        let err = service.execute(sql, &[&a, &foreign]).await.expect_err(what);
        assert_eq!(sqlstate(&err), "23503", "{what}: {err:?}");
    }
    // The same rows within tenant A are accepted.
    let a_order = order(&owner, a, a_client).await;
    owner
        .execute(
            "DELETE FROM order_processing_queue WHERE order_id = $1",
            &[&a_order],
        )
        .await
        .unwrap();
    service
        .execute(
            "INSERT INTO engagement_clocks (tenant_id, client_id) VALUES ($1, $2)",
            &[&a, &a_client],
        )
        .await
        .unwrap();
    service
        .execute(
            "INSERT INTO order_processing_queue (tenant_id, order_id) VALUES ($1, $2)",
            &[&a, &a_order],
        )
        .await
        .unwrap();
    service
        .execute(
            "INSERT INTO order_processing_exceptions (tenant_id, order_id, exception_type, severity, code, message)
             VALUES ($1, $2, 'pricing', 'error', 'x', 'm')",
            &[&a, &a_order],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn cards_and_suppressions_naming_another_tenants_client_or_contact_are_refused() {
    let db = TestDb::new().await;
    // Host tables carry no grants for the API roles here; the owner (the agent's own
    // connection) is subject to foreign keys like anyone.
    let c = db.client().await;
    let (a, _b, a_client, a_contact, b_client, b_contact, _) = foreign_rows(&c).await;
    let card = "INSERT INTO kanban_cards (tenant_id, client_id, contact_id, type, title) VALUES ($1, $2, $3, 'send_email', 't')";
    let err = c
        .execute(card, &[&a, &b_client, &None::<Uuid>])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err:?}");
    let err = c
        .execute(card, &[&a, &None::<Uuid>, &b_contact])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err:?}");
    let suppression = "INSERT INTO email_suppressions (tenant_id, contact_id, email, reason) VALUES ($1, $2, 'x@example.com', 'bounce')";
    let err = c.execute(suppression, &[&a, &b_contact]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err:?}");
    let err = c
        .execute(
            "INSERT INTO contacts (tenant_id, client_id, email) VALUES ($1, $2, 'y@example.com')",
            &[&a, &b_client],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err:?}");
    // Same tenant works.
    assert_eq!(
        c.execute(card, &[&a, &a_client, &a_contact]).await.unwrap(),
        1
    );
    assert_eq!(c.execute(suppression, &[&a, &a_contact]).await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------
// Known defect 15: one clock per contact and one client-level clock per client

#[tokio::test]
async fn two_contacts_of_one_client_and_the_client_each_get_exactly_one_clock() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "A", true).await;
    let client = client_row(&c, t, "Acme").await;
    let first = contact(&c, t, client, Some("one@example.com"), None, false).await;
    let second = contact(&c, t, client, Some("two@example.com"), None, false).await;
    for who in [first, second] {
        c.execute(
            "SELECT update_engagement_clock($1, $2, $3, 'email', NULL)",
            &[&t, &client, &who],
        )
        .await
        .unwrap();
    }
    let rows = c
        .query(
            "SELECT client_id, contact_id FROM engagement_clocks WHERE tenant_id = $1 ORDER BY contact_id NULLS FIRST",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r.get::<_, Option<Uuid>>(0) == Some(client)));
    let mut contacts: Vec<Option<Uuid>> = rows.iter().map(|r| r.get(1)).collect();
    contacts.sort();
    let mut want = vec![None, Some(first), Some(second)];
    want.sort();
    assert_eq!(contacts, want);

    let err = c
        .execute(
            "INSERT INTO engagement_clocks (tenant_id, client_id) VALUES ($1, $2)",
            &[&t, &client],
        )
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "23505",
        "second client-level clock: {err:?}"
    );
    let err = c
        .execute(
            "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id) VALUES ($1, $2, $3)",
            &[&t, &client, &first],
        )
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "23505",
        "second clock of a contact: {err:?}"
    );
    let err = c
        .execute(
            "INSERT INTO engagement_clocks (tenant_id, contact_id) VALUES ($1, $2)",
            &[&t, &second],
        )
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "23505",
        "second clock of a contact without client: {err:?}"
    );
    let err = c
        .execute(
            "INSERT INTO engagement_clocks (tenant_id) VALUES ($1)",
            &[&t],
        )
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "23514",
        "a clock needs a client or a contact: {err:?}"
    );
}
