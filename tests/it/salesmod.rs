//! Installing into the host it was made for (issue 15): a Salesmod-shaped database on a
//! Supabase-like PostgreSQL (tests/fixtures/salesmod.sql) migrates with no hand edits, and
//! then a full cycle (cards drafted, an approved e-mail sent over SMTP, a bounce
//! suppressed), check-engagement and process-orders work on it; migrate refuses, before
//! changing anything, a host whose tables would reject the agent's rows.

use crate::smtp;

use crate::common::*;
use tokio_postgres::Client;
use uuid::Uuid;

const SUPABASE: &str = include_str!("../fixtures/supabase.sql");
const FIXTURE: &str = include_str!("../fixtures/salesmod.sql");

struct Host {
    db: TestDb,
    c: Client,
}

async fn salesmod() -> Host {
    let db = TestDb::empty().await;
    let c = db.client().await;
    c.batch_execute(SUPABASE)
        .await
        .expect("loading the Supabase fixture");
    c.batch_execute(FIXTURE).await.expect("loading the fixture");
    Host { db, c }
}

/// The tenant's owner profile, the tenant (agent not yet enabled: the column comes with
/// migrate), a client and two contacts, one of them already suppressed by the host.
struct Seed {
    owner: Uuid,
    tenant: Uuid,
    client: Uuid,
    contact: Uuid,
    suppressed_contact: Uuid,
}

async fn seed_host(c: &Client, name: &str) -> Seed {
    let owner: Uuid = c
        .query_one(
            "INSERT INTO profiles (email, full_name) VALUES ($1, 'Owner') RETURNING id",
            &[&format!("owner@{name}.example")],
        )
        .await
        .unwrap()
        .get(0);
    let tenant: Uuid = c
        .query_one(
            "INSERT INTO tenants (name, owner_id) VALUES ($1, $2) RETURNING id",
            &[&name, &owner],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE profiles SET tenant_id = $1 WHERE id = $2",
        &[&tenant, &owner],
    )
    .await
    .unwrap();
    let client: Uuid = c
        .query_one(
            "INSERT INTO clients (org_id, tenant_id, company_name) VALUES ($1, $2, $3) RETURNING id",
            &[&owner, &tenant, &format!("{name} Lending")],
        )
        .await
        .unwrap()
        .get(0);
    let contact_sql = "INSERT INTO contacts (org_id, tenant_id, client_id, first_name, last_name, email, title, is_primary)
                       VALUES ($1, $2, $3, 'Pat', $4, $5, 'Loan Officer', $6) RETURNING id";
    let contact: Uuid = c
        .query_one(
            contact_sql,
            &[
                &owner,
                &tenant,
                &client,
                &"Doe",
                &format!("pat@{name}.example"),
                &true,
            ],
        )
        .await
        .unwrap()
        .get(0);
    let suppressed_contact: Uuid = c
        .query_one(
            contact_sql,
            &[
                &owner,
                &tenant,
                &client,
                &"Roe",
                &format!("sam@{name}.example"),
                &false,
            ],
        )
        .await
        .unwrap()
        .get(0);
    // Salesmod's own suppression: by owner and contact, no tenant_id column yet.
    c.execute(
        "INSERT INTO email_suppressions (org_id, contact_id, email, reason) VALUES ($1, $2, $3, 'unsubscribe')",
        &[&owner, &suppressed_contact, &format!("sam@{name}.example")],
    )
    .await
    .unwrap();
    Seed {
        owner,
        tenant,
        client,
        contact,
        suppressed_contact,
    }
}

/// After migrate: agent on for the tenant and globally, both contacts 10 days overdue.
async fn enable_and_make_overdue(c: &Client, s: &Seed) {
    enable_agent_globally(c).await;
    c.execute(
        "UPDATE tenants SET agent_enabled = true WHERE id = $1",
        &[&s.tenant],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due)
         SELECT tenant_id, client_id, id, now() - interval '10 days' FROM contacts WHERE tenant_id = $1",
        &[&s.tenant],
    )
    .await
    .unwrap();
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn salesmod_host_migrates_and_runs_a_full_cycle_engagement_and_orders_with_no_hand_edits() {
    let h = salesmod().await;
    let c = &h.c;
    let s = seed_host(c, "acme").await;

    let out = h.db.cmd().arg("migrate").output().unwrap();
    assert_ok(&out, "migrate");
    let status =
        h.db.cmd()
            .args(["migrate", "--status", "--json"])
            .output()
            .unwrap();
    assert_ok(&status, "migrate --status");
    assert_eq!(json_of(&status)["host_findings"], serde_json::json!([]));
    // Supabase's own auth.uid() is left alone.
    let uid_src: String = c
        .query_one(
            "SELECT prosrc FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!uid_src.contains("pg_catalog"), "{uid_src}");
    // The host's earlier suppression now belongs to its tenant.
    assert_eq!(
        count(
            c,
            &format!(
                "SELECT count(*) FROM email_suppressions WHERE tenant_id = '{}'",
                s.tenant
            )
        )
        .await,
        1
    );

    enable_and_make_overdue(c, &s).await;
    let out =
        h.db.tokio_cmd()
            .args(["run-cycle", "--json", "--force"])
            .output()
            .await
            .unwrap();
    assert_ok(&out, "first run-cycle");
    let report = json_of(&out);
    assert!(report.to_string().contains("\"completed\""), "{report:#}");

    // One card, for the contact the host did not suppress; the host's columns are filled.
    let cards = c
        .query(
            "SELECT k.contact_id, k.org_id, k.rationale, k.run_id, k.agent_run_id, k.type, k.state
               FROM kanban_cards k WHERE k.tenant_id = $1",
            &[&s.tenant],
        )
        .await
        .unwrap();
    assert_eq!(cards.len(), 1, "one follow-up card");
    let card = &cards[0];
    assert_eq!(card.get::<_, Option<Uuid>>(0), Some(s.contact));
    assert_eq!(
        card.get::<_, Uuid>(1),
        s.owner,
        "org_id is the tenant's owner"
    );
    assert!(!card.get::<_, String>(2).trim().is_empty());
    assert_eq!(card.get::<_, Option<Uuid>>(3), None, "run_id is Salesmod's");
    let agent_run: Option<Uuid> = card.get(4);
    assert_eq!(
        count(
            c,
            &format!(
                "SELECT count(*) FROM agent_autonomous_runs WHERE id = '{}' AND status = 'completed'",
                agent_run.expect("agent_run_id set")
            )
        )
        .await,
        1
    );

    // A person approves it in Salesmod; the next cycle sends it.
    c.execute(
        "UPDATE kanban_cards SET state = 'approved' WHERE tenant_id = $1",
        &[&s.tenant],
    )
    .await
    .unwrap();
    let server = smtp::SmtpServer::start().await;
    let out =
        h.db.tokio_cmd()
            .args(["run-cycle", "--json", "--force"])
            .env("SMTP_URL", server.url())
            .env("EMAIL_FROM", "agent@crm.example")
            .output()
            .await
            .unwrap();
    assert_ok(&out, "second run-cycle");
    let sent = server.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].rcpt_to, vec!["pat@acme.example".to_string()]);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM kanban_cards WHERE state = 'done' AND executed_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM agent_autonomous_runs WHERE status <> 'completed'"
        )
        .await,
        0
    );

    // Orders: one complete order of the host, queued by the trigger, validated.
    c.execute(
        "INSERT INTO orders (org_id, tenant_id, client_id, order_number, fee_amount, total_amount, tech_fee,
                             payment_method, property_address, property_city, property_state, property_zip,
                             borrower_name, borrower_email, borrower_phone, property_contact_name, property_contact_phone)
         VALUES ($1, $2, $3, 'SM-1', 450, 475, 25, 'card', '1 Main St', 'Springfield', 'IL', '62701',
                 'Bo Rower', 'bo@example.com', '555-0100', 'Pat Contact', '555-0101')",
        &[&s.owner, &s.tenant, &s.client],
    )
    .await
    .unwrap();
    let out =
        h.db.cmd()
            .args(["process-orders", "--json"])
            .output()
            .unwrap();
    assert_ok(&out, "process-orders");
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM order_processing_queue WHERE status = 'validated'"
        )
        .await,
        1
    );
    let out =
        h.db.cmd()
            .args(["check-engagement", "--json"])
            .output()
            .unwrap();
    assert_ok(&out, "check-engagement");
}

#[tokio::test]
async fn a_bounce_is_suppressed_in_salesmods_table_by_contact_and_owner() {
    let h = salesmod().await;
    let c = &h.c;
    let s = seed_host(c, "bounce").await;
    h.db.cmd().arg("migrate").assert().success();
    enable_and_make_overdue(c, &s).await;
    h.db.cmd().arg("run-cycle").assert().success();
    c.execute(
        "UPDATE kanban_cards SET state = 'approved' WHERE tenant_id = $1",
        &[&s.tenant],
    )
    .await
    .unwrap();
    let server = smtp::SmtpServer::start().await;
    server.set_behaviour(smtp::Behaviour::RejectRcpt(
        "550 5.1.1 no such user".to_string(),
    ));
    let out =
        h.db.tokio_cmd()
            .args(["run-cycle", "--json", "--force"])
            .env("SMTP_URL", server.url())
            .env("EMAIL_FROM", "agent@crm.example")
            .output()
            .await
            .unwrap();
    assert_ok(&out, "run-cycle with a bouncing address");
    let rows = c
        .query(
            "SELECT org_id, contact_id, reason FROM email_suppressions
              WHERE tenant_id = $1 AND contact_id = $2",
            &[&s.tenant, &s.contact],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the bounced contact is suppressed");
    assert_eq!(rows[0].get::<_, Uuid>(0), s.owner);
    assert_eq!(rows[0].get::<_, String>(2), "bounce");
    // The contact the host suppressed before keeps its one row.
    assert_eq!(
        count(
            c,
            &format!(
                "SELECT count(*) FROM email_suppressions WHERE contact_id = '{}'",
                s.suppressed_contact
            )
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_hosts_own_writes_still_work_after_migrate() {
    let h = salesmod().await;
    let c = &h.c;
    let s = seed_host(c, "hostwrites").await;
    h.db.cmd().arg("migrate").assert().success();
    // Salesmod's own agent run and card (run_id references agent_runs), and a suppression
    // without tenant_id, written as a signed-in owner through Salesmod's policies.
    let user = h.db.client().await;
    user.batch_execute(&format!(
        "SET ROLE authenticated; SET request.jwt.claims = '{{\"sub\": \"{}\", \"role\": \"authenticated\"}}';",
        s.owner
    ))
    .await
    .unwrap();
    let run: Uuid = user
        .query_one(
            "INSERT INTO agent_runs (org_id) VALUES ($1) RETURNING id",
            &[&s.owner],
        )
        .await
        .unwrap()
        .get(0);
    user.execute(
        "INSERT INTO kanban_cards (org_id, tenant_id, run_id, client_id, contact_id, type, title, rationale)
         VALUES ($1, $2, $3, $4, $5, 'schedule_call', 'Call Pat', 'Quarterly check-in')",
        &[&s.owner, &s.tenant, &run, &s.client, &s.contact],
    )
    .await
    .unwrap();
    user.execute(
        "INSERT INTO email_suppressions (org_id, contact_id, email, reason) VALUES ($1, $2, 'pat@hostwrites.example', 'manual')",
        &[&s.owner, &s.contact],
    )
    .await
    .unwrap();
    let (card_run, supp_tenant): (Option<Uuid>, Option<Uuid>) = {
        let r = c
            .query_one(
                "SELECT (SELECT run_id FROM kanban_cards WHERE type = 'schedule_call'),
                        (SELECT tenant_id FROM email_suppressions WHERE contact_id = $1)",
                &[&s.contact],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(card_run, Some(run), "the host's run_id is kept");
    assert_eq!(supp_tenant, Some(s.tenant), "filled from the contact");
}

#[tokio::test]
async fn migrate_refuses_a_host_whose_tables_would_reject_the_agents_rows_and_changes_nothing() {
    let h = salesmod().await;
    let c = &h.c;
    c.batch_execute(
        "ALTER TABLE kanban_cards ADD COLUMN board_id uuid NOT NULL;
         ALTER TABLE kanban_cards DROP CONSTRAINT kanban_cards_priority_check;
         ALTER TABLE kanban_cards ADD CONSTRAINT kanban_cards_priority_check CHECK (priority IN ('low', 'normal', 'urgent'));
         ALTER TABLE email_suppressions ADD COLUMN source text NOT NULL;",
    )
    .await
    .unwrap();
    let out = h.db.cmd().arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: nothing applied"), "{stderr}");
    for expected in [
        "kanban_cards.board_id: NOT NULL without a default",
        "email_suppressions.source: NOT NULL without a default",
        "kanban_cards.priority: CHECK kanban_cards_priority_check rejects what autopilot writes: priority = 'medium'; priority = 'high'",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
    }
    assert!(!stderr.contains("org_id"), "{stderr}");
    assert!(!stderr.contains("rationale"), "{stderr}");
    // Nothing was changed: no ledger, no agent table, no new column on the host's tables.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM pg_class WHERE relname IN ('autopilot_migrations', 'agent_autonomous_runs', 'autopilot_migration_objects')"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'kanban_cards' AND column_name = 'agent_target'"
        )
        .await,
        0
    );
    // --status lists the same findings and exits 1.
    let status = h.db.cmd().args(["migrate", "--status"]).output().unwrap();
    assert_eq!(status.status.code(), Some(1));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("host     kanban_cards.board_id: NOT NULL without a default"),
        "{text}"
    );
}

#[tokio::test]
async fn a_legacy_org_id_without_tenants_owner_id_is_a_finding() {
    let h = salesmod().await;
    h.c.batch_execute("ALTER TABLE tenants DROP COLUMN owner_id")
        .await
        .unwrap();
    let out = h.db.cmd().arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kanban_cards.org_id: NOT NULL without a default: autopilot fills a legacy org_id with the tenant's owner, but tenants has no owner_id column"),
        "{stderr}"
    );
    assert!(stderr.contains("email_suppressions.org_id"), "{stderr}");
}

#[tokio::test]
async fn a_host_table_migrate_did_not_create_keeps_the_hosts_own_privileges() {
    let h = salesmod().await;
    // The host left its products open on purpose (say, a public price list).
    h.c.batch_execute("ALTER TABLE products DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    h.db.cmd().arg("migrate").assert().success();
    h.db.cmd().arg("migrate").assert().success();
    let row =
        h.c.query_one(
            "SELECT relrowsecurity, has_table_privilege('anon', oid, 'SELECT')
               FROM pg_class WHERE oid = 'public.products'::regclass",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(row.get::<_, bool>(1));
    // The tables migrate created are closed, though.
    let open: bool =
        h.c.query_one(
            "SELECT has_table_privilege('anon', 'public.agent_autonomous_runs', 'SELECT')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!open);
}

/// A card the agent sent to `to` a day before `now`, and one approved after it, not yet sent.
async fn sent_then_approved(c: &Client, s: &Seed, contact: Uuid, to: &str) -> Uuid {
    c.execute(
        "INSERT INTO kanban_cards (org_id, tenant_id, client_id, contact_id, type, title, rationale, state,
                                   action_payload, message_id, executed_at)
         VALUES ($1, $2, $3, $4, 'send_email', 'Hello', 'follow-up', 'done',
                 jsonb_build_object('to', $5::text, 'subject', 'Hello', 'body', 'Hi'),
                 '<sent-' || gen_random_uuid() || '@crm.example>', now() - interval '1 day')",
        &[&s.owner, &s.tenant, &s.client, &contact, &to],
    )
    .await
    .unwrap();
    c.query_one(
        "INSERT INTO kanban_cards (org_id, tenant_id, client_id, contact_id, type, title, rationale, state, action_payload)
         VALUES ($1, $2, $3, $4, 'send_email', 'Again', 'follow-up', 'approved',
                 jsonb_build_object('to', $5::text, 'subject', 'Again', 'body', 'Hi again'))
         RETURNING id",
        &[&s.owner, &s.tenant, &s.client, &contact, &to],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn replies_in_salesmods_gmail_inbox_and_its_bounce_notices_stop_sends_in_the_same_cycle() {
    let h = salesmod().await;
    let c = &h.c;
    let s = seed_host(c, "inbox").await;
    let other = seed_host(c, "other").await;
    h.db.cmd().arg("migrate").assert().success();
    enable_and_make_overdue(c, &s).await;
    let lee: Uuid = c
        .query_one(
            "INSERT INTO contacts (org_id, tenant_id, client_id, first_name, last_name, email)
             VALUES ($1, $2, $3, 'Lee', 'Poe', 'lee@inbox.example') RETURNING id",
            &[&s.owner, &s.tenant, &s.client],
        )
        .await
        .unwrap()
        .get(0);
    let pat_card = sent_then_approved(c, &s, s.contact, "pat@inbox.example").await;
    let lee_card = sent_then_approved(c, &s, lee, "lee@inbox.example").await;
    // Pat answers in the owner's Gmail; Salesmod notes a hard bounce for Lee. Another
    // tenant's owner got mail from Lee too: not this tenant's to read.
    let gmail = "INSERT INTO gmail_messages (org_id, gmail_message_id, gmail_thread_id, from_email, to_email,
                                             subject, received_at)
                 VALUES ($1, $2, 't1', $3, ARRAY['agent@crm.example'], 'Re: Hello', now() - interval '1 hour')";
    c.execute(gmail, &[&s.owner, &"g1", &"Pat@Inbox.example"])
        .await
        .unwrap();
    c.execute(gmail, &[&other.owner, &"g2", &"lee@inbox.example"])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO email_notifications (org_id, contact_id, type, email, title, message, created_at)
         VALUES ($1, $2, 'bounce_hard', 'lee@inbox.example', 'Bounced', '550 5.1.1 no such user',
                 now() - interval '30 minutes')",
        &[&s.owner, &lee],
    )
    .await
    .unwrap();

    let server = smtp::SmtpServer::start().await;
    let out =
        h.db.tokio_cmd()
            .args(["run-cycle", "--json", "--force"])
            .env("SMTP_URL", server.url())
            .env("EMAIL_FROM", "agent@crm.example")
            .output()
            .await
            .unwrap();
    assert_ok(&out, "run-cycle");

    let rcpts: Vec<_> = server
        .messages()
        .iter()
        .map(|m| m.rcpt_to.clone())
        .collect();
    let insights = c
        .query(
            "SELECT insights::text, changes::text FROM agent_hourly_reflections",
            &[],
        )
        .await
        .unwrap();
    let insights: Vec<String> = insights
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    assert!(
        rcpts.is_empty(),
        "neither approved card was sent: {rcpts:?} {insights:?}"
    );
    let state = |id: Uuid| async move {
        c.query_one("SELECT state FROM kanban_cards WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(state(pat_card).await, "blocked", "held for a person");
    let holds = c
        .query(
            "SELECT email FROM contact_email_holds WHERE tenant_id = $1 AND resumed_at IS NULL",
            &[&s.tenant],
        )
        .await
        .unwrap();
    let held: Vec<String> = holds.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        held,
        vec!["pat@inbox.example".to_string()],
        "Lee's mail to the other tenant is not read"
    );
    let reasons = c
        .query(
            "SELECT reason FROM email_suppressions WHERE tenant_id = $1 AND lower(email) = 'lee@inbox.example'",
            &[&s.tenant],
        )
        .await
        .unwrap();
    assert_eq!(reasons.len(), 1, "the hard bounce suppresses Lee");
    assert_eq!(reasons[0].get::<_, String>(0), "bounce");
    assert_ne!(state(lee_card).await, "done");

    // A second cycle reads nothing twice.
    let events = "SELECT count(*) FROM inbound_mail_events";
    let before = count(c, events).await;
    h.db.cmd().args(["run-cycle", "--force"]).assert().success();
    assert_eq!(count(c, events).await, before);
}
