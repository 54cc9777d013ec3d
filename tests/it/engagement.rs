//! Engagement clocks (SPEC §4) and `autopilot check-engagement`: clock creation (defect 15),
//! priority arithmetic, violation order, compliance figures, the JSON report, `--limit`,
//! `--fail-under`, the follow-up selection (suppressions, open cards, missing addresses),
//! one open card per contact (defect 10) and the agent's touch resetting a clock (defect 9).
//!
//! Time is injected (`now` parameters, the hidden `--now` flag) instead of slept through.

use std::collections::BTreeSet;

use crate::common::*;
use autopilot::engagement::{
    draft_followup, ensure_clocks, insert_followup_cards, overdue_followups, refresh_scores,
    tenant_report, Draft, FollowUp,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap()
}

fn days(n: i64) -> Duration {
    Duration::days(n)
}

/// Move a contact's clock so it falls due at `due`.
async fn set_due(c: &Client, contact: Uuid, due: DateTime<Utc>) {
    let n = c
        .execute(
            "UPDATE engagement_clocks SET next_touch_due = $2 WHERE contact_id = $1",
            &[&contact, &due],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "contact {contact} has no clock");
}

async fn score_of(c: &Client, contact: Uuid) -> f64 {
    c.query_one(
        "SELECT priority_score::float8 FROM engagement_clocks WHERE contact_id = $1",
        &[&contact],
    )
    .await
    .unwrap()
    .get(0)
}

/// A run of `tenant` (cards reference the run that created them).
async fn run_of(c: &Client, tenant: Uuid) -> Uuid {
    c.query_one(
        "SELECT acquire_tenant_lock($1, 'engagement-test', 60)",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

async fn named_contact(
    c: &Client,
    tenant: Uuid,
    client: Uuid,
    first: &str,
    email: Option<&str>,
) -> Uuid {
    c.query_one(
        "INSERT INTO contacts (tenant_id, client_id, first_name, last_name, email)
         VALUES ($1, $2, $3, 'Doe', $4) RETURNING id",
        &[&tenant, &client, &first, &email],
    )
    .await
    .unwrap()
    .get(0)
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Clocks

#[tokio::test]
async fn every_contact_gets_one_clock_even_two_contacts_of_one_client_and_a_rerun_creates_none() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant_with_settings(
        &c,
        "Summit",
        serde_json::json!({"engagement_interval_days": 14}),
    )
    .await;
    let acme = client_row(&c, t, "Acme").await;
    let globex = client_row(&c, t, "Globex").await;
    let a1 = contact(&c, t, acme, Some("a1@acme.test"), None, true).await;
    let a2 = contact(&c, t, acme, Some("a2@acme.test"), None, false).await;
    let g1 = contact(&c, t, globex, None, None, false).await;
    let other = tenant(&c, "Other", true).await;
    let other_client = client_row(&c, other, "Initech").await;
    contact(&c, other, other_client, None, None, false).await;

    let created = ensure_clocks(&c, t, t0()).await.unwrap();
    let again = ensure_clocks(&c, t, t0() + days(1)).await.unwrap();

    assert_eq!(created, 3);
    assert_eq!(again, 0);
    let rows = c
        .query(
            "SELECT contact_id, client_id, next_touch_due, engagement_interval_days
             FROM engagement_clocks WHERE tenant_id = $1 ORDER BY contact_id",
            &[&t],
        )
        .await
        .unwrap();
    let mut expected = vec![(a1, acme), (a2, acme), (g1, globex)];
    expected.sort();
    let got: Vec<(Uuid, Uuid)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, expected, "each contact's clock names its client");
    for r in &rows {
        assert_eq!(
            r.get::<_, DateTime<Utc>>(2),
            t0(),
            "a new clock is due at once"
        );
        assert_eq!(r.get::<_, i32>(3), 14, "the tenant's interval");
    }
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM engagement_clocks WHERE tenant_id = '{other}'")
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_new_clock_is_overdue_by_zero_days_and_not_compliant() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let pat = contact(&c, t, acme, Some("pat@acme.test"), None, false).await;

    ensure_clocks(&c, t, t0()).await.unwrap();
    let r = tenant_report(&c, t, 20, t0()).await.unwrap();

    assert_eq!((r.total, r.compliant, r.overdue), (1, 0, 1));
    assert_eq!(r.compliance_rate, 0.0);
    assert_eq!(r.avg_days_overdue, 0.0);
    assert_eq!(r.violations.len(), 1);
    assert_eq!(r.violations[0].contact_id, Some(pat));
    assert_eq!(r.violations[0].client_id, Some(acme));
    assert_eq!(r.violations[0].days_overdue, 0);
}

#[tokio::test]
async fn priority_score_follows_titles_primary_bonus_and_the_fifty_point_cap() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let cases: Vec<(Option<&str>, bool, f64)> = vec![
        (Some("President"), false, 15.0),
        (Some("CEO"), false, 15.0),
        (Some("Owner"), false, 15.0),
        (Some("Director of Lending"), false, 15.0),
        (Some("ceo & founder"), false, 15.0),
        (Some("Manager"), false, 10.0),
        (Some("Team Lead"), false, 10.0),
        (Some("Head of Operations"), false, 10.0),
        (Some("MANAGER"), false, 10.0),
        (Some("Analyst"), false, 0.0),
        (None, false, 0.0),
        (None, true, 20.0),
        (Some("CEO"), true, 35.0),
    ];
    let mut ids = Vec::new();
    for (title, primary, bonus) in &cases {
        ids.push((
            contact(&c, t, acme, None, *title, *primary).await,
            *title,
            *primary,
            *bonus,
        ));
    }
    ensure_clocks(&c, t, t0()).await.unwrap();

    // 3 whole days overdue (and a bit) = 6 points.
    refresh_scores(&c, t, t0() + days(3) + Duration::hours(5))
        .await
        .unwrap();
    for (id, title, primary, bonus) in &ids {
        assert_eq!(
            score_of(&c, *id).await,
            6.0 + bonus,
            "title {title:?}, primary {primary} at 3 days"
        );
    }
    // 40 days overdue would be 80 points; the days part is capped at 50.
    refresh_scores(&c, t, t0() + days(40)).await.unwrap();
    for (id, title, primary, bonus) in &ids {
        assert_eq!(
            score_of(&c, *id).await,
            50.0 + bonus,
            "title {title:?}, primary {primary} at 40 days"
        );
    }
    // Not yet due: only the bonuses.
    refresh_scores(&c, t, t0() - days(1)).await.unwrap();
    for (id, title, primary, bonus) in &ids {
        assert_eq!(
            score_of(&c, *id).await,
            *bonus,
            "title {title:?}, primary {primary} before due"
        );
    }
}

#[tokio::test]
async fn a_client_level_clock_scores_only_its_overdue_days() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    // Touched 30 days before t0 with the default 21-day interval: 9 days overdue at t0.
    let touched = t0() - days(30);
    c.execute(
        "SELECT touch_engagement_clock($1, $2, NULL, 'call', NULL, $3)",
        &[&t, &acme, &touched],
    )
    .await
    .unwrap();

    let changed = refresh_scores(&c, t, t0()).await.unwrap();
    let unchanged = refresh_scores(&c, t, t0()).await.unwrap();

    let score: f64 = c
        .query_one("SELECT priority_score::float8 FROM engagement_clocks WHERE client_id = $1 AND contact_id IS NULL", &[&acme])
        .await
        .unwrap()
        .get(0);
    assert_eq!(score, 18.0);
    assert_eq!(changed, 1);
    assert_eq!(
        unchanged, 0,
        "a score that does not change is not rewritten"
    );
}

#[tokio::test]
async fn violations_come_most_days_overdue_first_then_highest_priority() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let long_overdue = contact(&c, t, acme, None, None, false).await;
    let ceo = contact(&c, t, acme, None, Some("CEO"), false).await;
    let plain = contact(&c, t, acme, None, None, false).await;
    let manager = contact(&c, t, acme, None, Some("Manager"), false).await;
    let not_due = contact(&c, t, acme, None, Some("CEO"), true).await;
    ensure_clocks(&c, t, t0()).await.unwrap();
    set_due(&c, long_overdue, t0() - days(10)).await;
    set_due(&c, plain, t0() - days(3) - Duration::hours(2)).await;
    set_due(&c, ceo, t0() - days(3)).await;
    set_due(&c, manager, t0() - days(3) - Duration::hours(1)).await;
    set_due(&c, not_due, t0() + days(5)).await;

    refresh_scores(&c, t, t0()).await.unwrap();
    let r = tenant_report(&c, t, 20, t0()).await.unwrap();

    let order: Vec<Option<Uuid>> = r.violations.iter().map(|v| v.contact_id).collect();
    assert_eq!(
        order,
        vec![Some(long_overdue), Some(ceo), Some(manager), Some(plain)]
    );
    let days_: Vec<i32> = r.violations.iter().map(|v| v.days_overdue).collect();
    assert_eq!(days_, vec![10, 3, 3, 3]);
    let scores: Vec<f64> = r.violations.iter().map(|v| v.priority_score).collect();
    assert_eq!(scores, vec![20.0, 21.0, 16.0, 6.0]);
    // The same order as the SQL function callers use.
    let sql_order: Vec<Option<Uuid>> = c
        .query(
            "SELECT contact_id FROM get_engagement_violations_at($1, $2)",
            &[&t, &t0()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sql_order, order);
}

#[tokio::test]
async fn compliance_figures_count_clocks_by_their_due_dates() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let fresh = contact(&c, t, acme, None, None, false).await;
    let one_day = contact(&c, t, acme, None, None, false).await;
    let two_days = contact(&c, t, acme, None, None, false).await;
    ensure_clocks(&c, t, t0()).await.unwrap();
    set_due(&c, fresh, t0() + Duration::seconds(1)).await;
    set_due(&c, one_day, t0() - days(1)).await;
    set_due(&c, two_days, t0() - days(2) - Duration::hours(23)).await;

    let r = tenant_report(&c, t, 20, t0()).await.unwrap();

    assert_eq!((r.total, r.compliant, r.overdue), (3, 1, 2));
    assert_eq!(r.compliance_rate, 33.33);
    assert_eq!(r.avg_days_overdue, 1.5);
    assert_eq!(r.violations.len(), 2);
    assert_eq!(r.tenant_id, t);
}

#[tokio::test]
async fn a_tenant_without_clocks_is_fully_compliant() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Empty", true).await;

    let created = ensure_clocks(&c, t, t0()).await.unwrap();
    let r = tenant_report(&c, t, 20, t0()).await.unwrap();

    assert_eq!(created, 0);
    assert_eq!((r.total, r.compliant, r.overdue), (0, 0, 0));
    assert_eq!(r.compliance_rate, 100.0);
    assert_eq!(r.avg_days_overdue, 0.0);
    assert!(r.violations.is_empty());
}

// ---------------------------------------------------------------------------------------
// The command

#[tokio::test]
async fn check_engagement_json_has_exactly_the_spec_shape_for_every_tenant() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let a = tenant(&c, "Alpha", true).await;
    let b = tenant(&c, "Beta", false).await;
    let acme = client_row(&c, a, "Acme").await;
    contact(&c, a, acme, Some("x@acme.test"), Some("CEO"), true).await;
    contact(&c, a, acme, None, None, false).await;
    let now = t0().to_rfc3339();

    let out = db
        .cmd()
        .args(["--now", &now, "check-engagement", "--json"])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(keys(&doc), set(&["tenants"]));
    let tenants = doc["tenants"].as_array().unwrap();
    let mut ids = vec![a, b];
    ids.sort();
    let got: Vec<Uuid> = tenants
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, ids, "every tenant, in tenant-id order");
    for t in tenants {
        assert_eq!(
            keys(t),
            set(&[
                "tenant_id",
                "clocks_created",
                "total",
                "compliant",
                "overdue",
                "compliance_rate",
                "avg_days_overdue",
                "violations"
            ])
        );
        for k in [
            "clocks_created",
            "total",
            "compliant",
            "overdue",
            "compliance_rate",
            "avg_days_overdue",
        ] {
            assert!(t[k].is_number(), "{k} is a number: {t}");
        }
    }
    let alpha = tenants
        .iter()
        .find(|t| t["tenant_id"] == a.to_string())
        .unwrap();
    assert_eq!(alpha["clocks_created"], 2);
    assert_eq!(alpha["total"], 2);
    assert_eq!(alpha["overdue"], 2);
    assert_eq!(alpha["compliance_rate"].as_f64(), Some(0.0));
    let violations = alpha["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 2);
    for v in violations {
        assert_eq!(
            keys(v),
            set(&[
                "clock_id",
                "client_id",
                "contact_id",
                "days_overdue",
                "priority_score",
                "next_touch_due"
            ])
        );
        assert!(v["priority_score"].is_number(), "{v}");
        assert!(v["days_overdue"].is_number(), "{v}");
        let due: DateTime<Utc> = v["next_touch_due"].as_str().unwrap().parse().unwrap();
        assert_eq!(due, t0());
    }
    assert_eq!(
        violations[0]["priority_score"].as_f64(),
        Some(35.0),
        "the primary CEO comes first"
    );
    let beta = tenants
        .iter()
        .find(|t| t["tenant_id"] == b.to_string())
        .unwrap();
    assert_eq!(beta["compliance_rate"].as_f64(), Some(100.0));
    assert_eq!(beta["violations"], serde_json::json!([]));

    let again = db
        .cmd()
        .args(["--now", &now, "check-engagement", "--json"])
        .output()
        .unwrap();
    let doc = json_of(&again);
    let created: Vec<i64> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["clocks_created"].as_i64().unwrap())
        .collect();
    assert_eq!(created, vec![0, 0], "a second run creates no clock");
}

#[tokio::test]
async fn limit_caps_the_violations_listed_but_not_the_counts() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    for _ in 0..5 {
        contact(&c, t, acme, None, None, false).await;
    }
    let now = t0().to_rfc3339();
    let tid = t.to_string();

    let out = db
        .cmd()
        .args([
            "--now",
            &now,
            "check-engagement",
            "--tenant",
            &tid,
            "--limit",
            "2",
            "--json",
        ])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    let report = &doc["tenants"][0];
    assert_eq!(doc["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(report["overdue"], 5);
    assert_eq!(report["violations"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn fail_under_exits_1_below_the_rate_and_0_at_or_above_it_and_still_reports() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let x = contact(&c, t, acme, None, None, false).await;
    let y = contact(&c, t, acme, None, None, false).await;
    contact(&c, t, acme, None, None, false).await;
    ensure_clocks(&c, t, t0()).await.unwrap();
    set_due(&c, x, t0() + days(3)).await;
    set_due(&c, y, t0() + days(3)).await;
    let now = t0().to_rfc3339();
    let tid = t.to_string();
    let run = |pct: &str| {
        db.cmd()
            .args([
                "--now",
                &now,
                "check-engagement",
                "--tenant",
                &tid,
                "--fail-under",
                pct,
            ])
            .output()
            .unwrap()
    };

    let at = run("66.67");
    let above = run("50");
    let below = run("66.68");

    assert_eq!(
        at.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&at.stderr)
    );
    assert_eq!(above.status.code(), Some(0));
    assert_eq!(below.status.code(), Some(1));
    let text = String::from_utf8_lossy(&below.stdout);
    assert!(
        text.contains("compliance 66.67%"),
        "the report is printed: {text}"
    );
    assert!(text.contains("1 overdue of 3 clocks"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("    contact "))
            .count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_tenant_exits_2_before_any_clock_is_created() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    contact(&c, t, acme, None, None, false).await;

    let out = db
        .cmd()
        .args([
            "check-engagement",
            "--tenant",
            &t.to_string(),
            "--tenant",
            &Uuid::new_v4().to_string(),
        ])
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tenant"));
    assert_eq!(count(&c, "SELECT count(*) FROM engagement_clocks").await, 0);
}

// ---------------------------------------------------------------------------------------
// Follow-ups

#[tokio::test]
async fn overdue_followups_skip_suppressed_and_carded_contacts_and_keep_those_without_email() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let by_address = named_contact(&c, t, acme, "Sue", Some("Sue@Acme.test")).await;
    let by_id = named_contact(&c, t, acme, "Ida", Some("ida@acme.test")).await;
    let carded = named_contact(&c, t, acme, "Cara", Some("cara@acme.test")).await;
    let no_email = named_contact(&c, t, acme, "Nemo", None).await;
    let plain = named_contact(&c, t, acme, "Pat", Some("pat@acme.test")).await;
    let done_card = named_contact(&c, t, acme, "Dan", Some("dan@acme.test")).await;
    let not_due = named_contact(&c, t, acme, "Nora", Some("nora@acme.test")).await;
    // Another tenant's suppression of the same address does not apply here.
    let other = tenant(&c, "Other", true).await;
    c.execute(
        "INSERT INTO email_suppressions (tenant_id, email, reason) VALUES ($1, 'PAT@acme.test', 'bounce')",
        &[&other],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_suppressions (tenant_id, email, reason) VALUES ($1, 'sue@ACME.TEST', 'unsubscribe')",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO email_suppressions (tenant_id, contact_id, reason) VALUES ($1, $2, 'manual')",
        &[&t, &by_id],
    )
    .await
    .unwrap();
    for (target, state) in [(carded, "in_review"), (done_card, "done")] {
        c.execute(
            "INSERT INTO kanban_cards (tenant_id, contact_id, agent_target, type, title, state)
             VALUES ($1, $2, $2, 'send_email', 'earlier follow-up', $3)",
            &[&t, &target, &state],
        )
        .await
        .unwrap();
    }
    ensure_clocks(&c, t, t0()).await.unwrap();
    set_due(&c, no_email, t0() - days(9)).await;
    set_due(&c, plain, t0() - days(5)).await;
    set_due(&c, done_card, t0() - days(2)).await;
    set_due(&c, not_due, t0() + days(2)).await;
    refresh_scores(&c, t, t0()).await.unwrap();

    let got = overdue_followups(&c, t, t0(), 50).await.unwrap();

    let ids: Vec<Uuid> = got.iter().map(|f| f.contact_id).collect();
    assert_eq!(ids, vec![no_email, plain, done_card]);
    assert!(!ids.contains(&by_address) && !ids.contains(&by_id) && !ids.contains(&carded));
    assert_eq!(
        got[0].email, None,
        "a contact without an address is returned"
    );
    let pat = &got[1];
    assert_eq!(pat.email.as_deref(), Some("pat@acme.test"));
    assert_eq!(pat.first_name.as_deref(), Some("Pat"));
    assert_eq!(pat.last_name.as_deref(), Some("Doe"));
    assert_eq!(pat.company_name.as_deref(), Some("Acme"));
    assert_eq!(pat.client_id, Some(acme));
    assert_eq!(pat.days_overdue, 5);
    assert_eq!(pat.priority_score, 10.0);
    assert_eq!(
        overdue_followups(&c, t, t0(), 1).await.unwrap().len(),
        1,
        "limit applies"
    );
}

async fn drafts_for(c: &Client, t: Uuid) -> Vec<(FollowUp, Draft)> {
    overdue_followups(c, t, t0(), 50)
        .await
        .unwrap()
        .into_iter()
        .map(|f| {
            let d = draft_followup(&f, "Summit AMC");
            (f, d)
        })
        .collect()
}

#[tokio::test]
async fn inserting_follow_up_cards_twice_leaves_one_open_card_per_contact() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let pat = named_contact(&c, t, acme, "Pat", Some("pat@acme.test")).await;
    let sam = named_contact(&c, t, acme, "Sam", Some("sam@acme.test")).await;
    let nemo = named_contact(&c, t, acme, "Nemo", None).await;
    ensure_clocks(&c, t, t0()).await.unwrap();
    set_due(&c, pat, t0() - days(12)).await;
    refresh_scores(&c, t, t0()).await.unwrap();
    let run = run_of(&c, t).await;
    let drafts = drafts_for(&c, t).await;
    assert_eq!(drafts.len(), 3);

    let first = insert_followup_cards(&c, t, run, &drafts, chrono::Utc::now())
        .await
        .unwrap();
    let second = insert_followup_cards(&c, t, run, &drafts, chrono::Utc::now())
        .await
        .unwrap();

    assert_eq!(first, 2, "one card per contact with an address");
    assert_eq!(second, 0, "the next cycle piles up nothing");
    assert_eq!(count(&c, "SELECT count(*) FROM kanban_cards").await, 2);
    let card = c
        .query_one(
            "SELECT run_id, client_id, contact_id, agent_target, type, state, title, rationale, priority, action_payload
             FROM kanban_cards WHERE contact_id = $1",
            &[&pat],
        )
        .await
        .unwrap();
    assert_eq!(card.get::<_, Option<Uuid>>("run_id"), Some(run));
    assert_eq!(card.get::<_, Option<Uuid>>("client_id"), Some(acme));
    assert_eq!(card.get::<_, Option<Uuid>>("agent_target"), Some(pat));
    assert_eq!(card.get::<_, String>("type"), "send_email");
    assert_eq!(card.get::<_, String>("state"), "suggested");
    assert_eq!(
        card.get::<_, String>("title"),
        "Follow up with Pat Doe (Acme)"
    );
    assert!(card
        .get::<_, String>("rationale")
        .contains("12 days overdue"));
    assert_eq!(card.get::<_, String>("priority"), "medium", "24 points");
    let payload: serde_json::Value = card.get("action_payload");
    assert_eq!(
        keys(&payload),
        set(&[
            "to",
            "subject",
            "body",
            "contact_id",
            "clock_id",
            "days_overdue"
        ])
    );
    assert_eq!(payload["to"], "pat@acme.test");
    assert_eq!(payload["contact_id"], pat.to_string());
    assert_eq!(payload["days_overdue"], 12);
    assert!(
        payload["subject"]
            .as_str()
            .unwrap()
            .starts_with("A few ideas"),
        "{payload}"
    );
    // Only the contact without an address is left to name as a blocker.
    let left: Vec<Uuid> = overdue_followups(&c, t, t0(), 50)
        .await
        .unwrap()
        .iter()
        .map(|f| f.contact_id)
        .collect();
    assert_eq!(left, vec![nemo]);
    // Once the card is done, the next overdue spell may get a new one.
    c.execute(
        "UPDATE kanban_cards SET state = 'done' WHERE contact_id = $1",
        &[&sam],
    )
    .await
    .unwrap();
    assert_eq!(
        insert_followup_cards(&c, t, run, &drafts, chrono::Utc::now())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn eight_concurrent_inserts_of_the_same_drafts_leave_one_open_card_per_contact() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    for name in ["Ann", "Bob", "Cat"] {
        named_contact(
            &c,
            t,
            acme,
            name,
            Some(&format!("{}@acme.test", name.to_lowercase())),
        )
        .await;
    }
    ensure_clocks(&c, t, t0()).await.unwrap();
    let run = run_of(&c, t).await;
    let drafts = drafts_for(&c, t).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(db.client().await);
    }

    let results = futures::future::join_all(
        clients
            .iter()
            .map(|cl| insert_followup_cards(cl, t, run, &drafts, chrono::Utc::now())),
    )
    .await;

    let inserted: u64 = results.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(inserted, 3);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'send_email' AND state = 'suggested'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn the_agents_touch_with_no_profile_makes_the_contact_compliant_again() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let pat = named_contact(&c, t, acme, "Pat", Some("pat@acme.test")).await;
    // update_engagement_clock uses the server's clock, so place the clock around it.
    let now = Utc::now();
    ensure_clocks(&c, t, now - days(30)).await.unwrap();
    let before = tenant_report(&c, t, 20, now).await.unwrap();
    assert_eq!((before.compliant, before.overdue), (0, 1));
    assert_eq!(before.violations[0].days_overdue, 30);

    c.execute(
        "SELECT update_engagement_clock($1, $2, $3, 'email', NULL)",
        &[&t, &acme, &pat],
    )
    .await
    .unwrap();

    let after_now = Utc::now();
    let after = tenant_report(&c, t, 20, after_now).await.unwrap();
    let contact_clock = c
        .query_one(
            "SELECT last_touch_type, last_touch_by, next_touch_due FROM engagement_clocks WHERE contact_id = $1",
            &[&pat],
        )
        .await
        .unwrap();
    assert_eq!(
        contact_clock.get::<_, Option<String>>(0).as_deref(),
        Some("email")
    );
    assert_eq!(
        contact_clock.get::<_, Option<Uuid>>(1),
        None,
        "NULL = the agent touched"
    );
    let due: DateTime<Utc> = contact_clock.get(2);
    assert!(
        due > after_now + days(20) && due <= after_now + days(21),
        "due {due}"
    );
    // The touch also opened the client-level clock: both are compliant now.
    assert_eq!((after.total, after.compliant, after.overdue), (2, 2, 0));
    assert_eq!(after.compliance_rate, 100.0);
    assert!(overdue_followups(&c, t, after_now, 50)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn any_open_parked_or_just_sent_email_card_for_the_contact_prevents_a_draft_whoever_made_it()
{
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Summit", true).await;
    let acme = client_row(&c, t, "Acme").await;
    let approved_by_person = named_contact(&c, t, acme, "Ann", Some("ann@acme.test")).await;
    let by_address = named_contact(&c, t, acme, "Ben", Some("Ben@Acme.test")).await;
    let just_sent = named_contact(&c, t, acme, "Jo", Some("jo@acme.test")).await;
    let sent_long_ago = named_contact(&c, t, acme, "Lou", Some("lou@acme.test")).await;
    let parked = named_contact(&c, t, acme, "Pia", Some("pia@acme.test")).await;
    let blocked_by_policy = named_contact(&c, t, acme, "Bo", Some("bo@acme.test")).await;
    let rejected = named_contact(&c, t, acme, "Rae", Some("rae@acme.test")).await;
    let card = |contact: Option<Uuid>,
                to: &str,
                state: &str,
                executed_days_ago: Option<i64>,
                code: Option<&str>| {
        let payload = serde_json::json!({"to": to, "subject": "Hello", "body": "Hi"});
        let executed = executed_days_ago.map(|d| t0() - days(d));
        let (c, t) = (&c, t);
        let state = state.to_string();
        let code = code.map(str::to_string);
        async move {
            // No agent_target: cards a person created in the product.
            c.execute(
                "INSERT INTO kanban_cards (tenant_id, client_id, contact_id, type, title, state, action_payload, executed_at, blocked_code)
                 VALUES ($1, $2, $3, 'send_email', 'by hand', $4, $5, $6, $7)",
                &[&t, &acme, &contact, &state, &payload, &executed, &code],
            )
            .await
            .unwrap();
        }
    };
    card(
        Some(approved_by_person),
        "ann@acme.test",
        "approved",
        None,
        None,
    )
    .await;
    card(None, "ben@ACME.test", "suggested", None, None).await;
    card(None, "jo@acme.test", "done", Some(3), None).await;
    card(Some(sent_long_ago), "lou@acme.test", "done", Some(40), None).await;
    card(
        Some(parked),
        "pia@acme.test",
        "blocked",
        None,
        Some("delivery_unknown"),
    )
    .await;
    card(
        Some(blocked_by_policy),
        "bo@acme.test",
        "blocked",
        None,
        None,
    )
    .await;
    card(Some(rejected), "rae@acme.test", "rejected", None, None).await;
    ensure_clocks(&c, t, t0()).await.unwrap();
    c.execute(
        "UPDATE engagement_clocks SET next_touch_due = $2 WHERE tenant_id = $1",
        &[&t, &(t0() - days(1))],
    )
    .await
    .unwrap();

    let got: BTreeSet<Uuid> = overdue_followups(&c, t, t0(), 50)
        .await
        .unwrap()
        .iter()
        .map(|f| f.contact_id)
        .collect();

    // Sent 40 days ago is outside the 21-day interval; a card blocked by a policy or
    // rejected by a person sent nothing and holds nothing open.
    assert_eq!(
        got,
        [sent_long_ago, blocked_by_policy, rejected]
            .into_iter()
            .collect()
    );
    assert!(!got.contains(&approved_by_person) && !got.contains(&by_address));
    assert!(!got.contains(&just_sent) && !got.contains(&parked));
}
