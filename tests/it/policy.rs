//! The policy engine (SPEC §5): each policy blocks what it should, in the documented order,
//! and a block uses no quota.

use crate::common::*;
use autopilot::policy::{evaluate, record, Action, Quota, Violation};
use autopilot::settings::TenantSettings;
use chrono::Utc;
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

fn send(to: &str, payload: serde_json::Value) -> Action {
    let mut a = Action::new("send_email", payload);
    a.recipient_email = Some(to.to_string());
    a.quota = Some(Quota::EmailSend);
    a
}

async fn quota_used(c: &Client, tenant: Uuid) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(action_count), 0)::bigint FROM agent_rate_limits WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_human_task_without_a_reason_is_blocked_and_an_escalation_is_allowed() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let s = TenantSettings::default();
    let now = Utc::now();
    for kind in ["create_task", "call"] {
        let a = Action::new(kind, json!({"title": "call them"}));
        let b = evaluate(&c, t, &s, &a, now)
            .await
            .unwrap()
            .expect("blocked");
        assert_eq!(b.violation, Violation::HumanTaskNoRequest);
    }
    let mut a = Action::new("create_task", json!({"order_id": Uuid::new_v4()}));
    a.justification.escalates_order_exception = true;
    assert_eq!(evaluate(&c, t, &s, &a, now).await.unwrap(), None);
    let mut a = Action::new("call", json!({}));
    a.justification.client_requested = true;
    assert_eq!(evaluate(&c, t, &s, &a, now).await.unwrap(), None);
    let mut a = Action::new("create_task", json!({}));
    a.justification.compliance_deadline_due = true;
    assert_eq!(evaluate(&c, t, &s, &a, now).await.unwrap(), None);
}

#[tokio::test]
async fn research_waits_while_the_tenant_has_engagement_violations() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    let k = contact(&c, t, cl, Some("a@acme.example"), None, false).await;
    let s = TenantSettings::default();
    let mut research = Action::new("research", json!({"topic": "market"}));
    research.quota = Some(Quota::Research);
    let now = Utc::now();
    assert_eq!(
        evaluate(&c, t, &s, &research, now).await.unwrap(),
        None,
        "no clocks, no violations"
    );
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due) VALUES ($1, $2, $3, now() - interval '2 days')",
        &[&t, &cl, &k],
    )
    .await
    .unwrap();
    let b = evaluate(&c, t, &s, &research, now)
        .await
        .unwrap()
        .expect("blocked");
    assert_eq!(b.violation, Violation::ResearchBeforeExhaustion);
}

#[tokio::test]
async fn destructive_payloads_are_blocked_as_sensitive_without_using_quota() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let s = TenantSettings::default();
    let a = send(
        "a@acme.example",
        json!({"to": "a@acme.example", "body": "please TRUNCATE the orders table"}),
    );
    let b = evaluate(&c, t, &s, &a, Utc::now())
        .await
        .unwrap()
        .expect("blocked");
    assert_eq!(b.violation, Violation::SensitiveAction);
    assert_eq!(quota_used(&c, t).await, 0);
}

#[tokio::test]
async fn suppression_blocks_by_address_in_any_case_or_by_contact() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    let k = contact(&c, t, cl, Some("other@acme.example"), None, false).await;
    c.execute(
        "INSERT INTO email_suppressions (tenant_id, email, reason) VALUES ($1, 'Pat.Doe@Acme.example', 'unsubscribe')",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_suppressions (tenant_id, contact_id, reason) VALUES ($1, $2, 'bounce')",
        &[&t, &k],
    )
    .await
    .unwrap();
    let s = TenantSettings::default();
    let now = Utc::now();
    let b = evaluate(&c, t, &s, &send("pat.doe@acme.EXAMPLE", json!({})), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.violation, Violation::Suppression);
    let mut by_contact = send("fresh@acme.example", json!({}));
    by_contact.recipient_contact = Some(k);
    assert_eq!(
        evaluate(&c, t, &s, &by_contact, now)
            .await
            .unwrap()
            .unwrap()
            .violation,
        Violation::Suppression
    );
    assert_eq!(quota_used(&c, t).await, 0, "a blocked send uses no quota");
    // Another tenant's suppression does not apply.
    let other = tenant(&c, "Other", true).await;
    assert_eq!(
        evaluate(&c, other, &s, &send("pat.doe@acme.example", json!({})), now)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn suppression_that_cannot_be_checked_blocks_the_send() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.batch_execute("ALTER TABLE email_suppressions RENAME TO email_suppressions_gone")
        .await
        .unwrap();
    let b = evaluate(
        &c,
        t,
        &TenantSettings::default(),
        &send("a@acme.example", json!({})),
        Utc::now(),
    )
    .await
    .unwrap()
    .expect("fail closed");
    assert_eq!(b.violation, Violation::Suppression);
    assert!(b.reason.contains("could not be checked"), "{}", b.reason);
}

#[tokio::test]
async fn action_types_outside_the_allowed_list_are_blocked() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let s = TenantSettings::parse(&json!({"allowed_action_types": ["create_task"]})).unwrap();
    let b = evaluate(&c, t, &s, &send("a@acme.example", json!({})), Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.violation, Violation::ActionNotAllowed);
    assert_eq!(quota_used(&c, t).await, 0);
}

#[tokio::test]
async fn the_first_blocking_policy_in_spec_order_decides() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    c.execute(
        "INSERT INTO email_suppressions (tenant_id, email) VALUES ($1, 'a@acme.example')",
        &[&t],
    )
    .await
    .unwrap();
    let s = TenantSettings::parse(
        &json!({"allowed_action_types": ["create_task"], "max_emails_per_hour": 0}),
    )
    .unwrap();
    // Rate limit (exhausted) comes before sensitive, suppression and not-allowed.
    let a = send("a@acme.example", json!({"op": "delete all contacts"}));
    assert_eq!(
        evaluate(&c, t, &s, &a, Utc::now())
            .await
            .unwrap()
            .unwrap()
            .violation,
        Violation::RateLimit
    );
    // With quota left: sensitive before suppression and not-allowed.
    let s = TenantSettings::parse(&json!({"allowed_action_types": ["create_task"]})).unwrap();
    assert_eq!(
        evaluate(&c, t, &s, &a, Utc::now())
            .await
            .unwrap()
            .unwrap()
            .violation,
        Violation::SensitiveAction
    );
    // Suppression before not-allowed.
    let a = send("a@acme.example", json!({}));
    assert_eq!(
        evaluate(&c, t, &s, &a, Utc::now())
            .await
            .unwrap()
            .unwrap()
            .violation,
        Violation::Suppression
    );
}

#[tokio::test]
async fn allowed_sends_take_quota_until_the_hourly_limit_then_are_rate_limited() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let s = TenantSettings::parse(&json!({"max_emails_per_hour": 2})).unwrap();
    let now = Utc::now();
    let a = send("a@acme.example", json!({}));
    assert_eq!(evaluate(&c, t, &s, &a, now).await.unwrap(), None);
    assert_eq!(evaluate(&c, t, &s, &a, now).await.unwrap(), None);
    let b = evaluate(&c, t, &s, &a, now).await.unwrap().unwrap();
    assert_eq!(b.violation, Violation::RateLimit);
    assert_eq!(quota_used(&c, t).await, 2);
    // The next UTC hour has a fresh window.
    assert_eq!(
        evaluate(&c, t, &s, &a, now + chrono::Duration::hours(1))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_recorded_block_names_run_type_action_and_reason() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let run: Uuid = c
        .query_one("SELECT acquire_tenant_lock($1, 'test', 60)", &[&t])
        .await
        .unwrap()
        .get(0);
    let a = Action::new("call", json!({"who": "x"}));
    let b = evaluate(&c, t, &TenantSettings::default(), &a, Utc::now())
        .await
        .unwrap()
        .unwrap();
    record(&c, t, Some(run), &a, &b, Utc::now()).await.unwrap();
    let row = c
        .query_one(
            "SELECT run_id, violation_type, action_type, action_data, reason, blocked FROM agent_policy_violations",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(run));
    assert_eq!(row.get::<_, String>(1), "human_task_no_request");
    assert_eq!(row.get::<_, String>(2), "call");
    assert_eq!(row.get::<_, serde_json::Value>(3), json!({"who": "x"}));
    assert!(!row.get::<_, String>(4).is_empty());
    assert!(row.get::<_, bool>(5));
}
