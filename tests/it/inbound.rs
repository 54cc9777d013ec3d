//! Inbound mail (issue 17): bounces, complaints and replies to the agent's e-mail, read by
//! `autopilot ingest-mail` from stdin or a Maildir and from the host's inbox by the cycle.
//! The messages are real ones in the shapes Postfix, Exim and feedback loops send
//! (tests/fixtures/mail/, written from RFC 3464, 3834 and 5965), about the card
//! 7d3c6f0e-… whose deterministic Message-ID each of them names.

use crate::smtp;

use crate::common::*;
use autopilot::email::{send_approved, Mailer, MailerConfig};
use autopilot::settings::TenantSettings;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use smtp::SmtpServer;
use tokio_postgres::Client;
use uuid::Uuid;

const CARD: &str = "7d3c6f0e-1b2a-4c5d-8e9f-0a1b2c3d4e5f";
const PAT: &str = "pat@client.example";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 14, 50, 0).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/mail/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture about another card and with another Message-ID of its own.
fn fixture_for(name: &str, card: Uuid, own_id_suffix: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture(name)).unwrap();
    let text = text.replace(CARD, &card.to_string());
    // The report's own Message-ID (first Message-Id/ID header) gets a suffix.
    let mut out = String::new();
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let lower = line.to_ascii_lowercase();
        if !done && lower.starts_with("message-id:") && !line.contains(&card.to_string()) {
            out.push_str(&line.replacen('@', &format!(".{own_id_suffix}@"), 1));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

fn mailer(url: &str) -> Mailer {
    let cfg = MailerConfig::from_vars(|k| match k {
        "SMTP_URL" => Some(url.to_string()),
        "EMAIL_FROM" => Some("Autopilot <agent@amc.example>".to_string()),
        "SMTP_TIMEOUT_SECS" => Some("5".to_string()),
        _ => None,
    })
    .unwrap()
    .unwrap();
    Mailer::new(cfg).unwrap()
}

struct World {
    db: TestDb,
    c: Client,
    tenant: Uuid,
    client: Uuid,
    contact: Uuid,
}

async fn world() -> World {
    let db = TestDb::new().await;
    let c = db.client().await;
    let tenant = tenant(&c, "Acme AMC", true).await;
    let client = client_row(&c, tenant, "Lender One").await;
    let contact = contact(&c, tenant, client, Some("Pat@Client.example"), None, true).await;
    World {
        db,
        c,
        tenant,
        client,
        contact,
    }
}

/// A card the agent sent (done, Message-ID recorded) at `at`.
async fn sent_card(w: &World, id: Uuid, contact: Option<Uuid>, to: &str, at: DateTime<Utc>) {
    let payload = json!({"to": to, "subject": "Checking in", "body": "Hello Pat,\nhow are the appraisals going?"});
    w.c.execute(
        "INSERT INTO kanban_cards (id, tenant_id, client_id, contact_id, agent_target, type, title, state,
                                   action_payload, message_id, executed_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, NULL, 'send_email', 'Follow up', 'done', $5, $6, $7, $7, $7)",
        &[&id, &w.tenant, &w.client, &contact, &payload, &format!("<card-{id}@amc.example>"), &at],
    )
    .await
    .unwrap();
}

async fn the_card(w: &World) {
    sent_card(
        w,
        Uuid::parse_str(CARD).unwrap(),
        Some(w.contact),
        PAT,
        now() - Duration::hours(5),
    )
    .await;
}

async fn approved_card(w: &World, contact: Option<Uuid>, to: &str) -> Uuid {
    let payload =
        json!({"to": to, "subject": "Next steps", "body": "Hello,\nhere are the next steps."});
    w.c.query_one(
        "INSERT INTO kanban_cards (tenant_id, client_id, contact_id, type, title, state, action_payload, created_at)
         VALUES ($1, $2, $3, 'send_email', 'Next steps', 'approved', $4, $5) RETURNING id",
        &[&w.tenant, &w.client, &contact, &payload, &(now() - Duration::hours(2))],
    )
    .await
    .unwrap()
    .get(0)
}

/// `autopilot ingest-mail --json` with `input` on stdin at `at`.
fn ingest_at(w: &World, input: &[u8], at: DateTime<Utc>) -> std::process::Output {
    w.db.cmd()
        .args(["ingest-mail", "--json", "--now", &at.to_rfc3339()])
        .write_stdin(input.to_vec())
        .output()
        .unwrap()
}

fn ingest(w: &World, input: &[u8]) -> std::process::Output {
    ingest_at(w, input, now())
}

fn only_message(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(out);
    assert_eq!(doc["total"], 1, "{doc}");
    doc["messages"][0].clone()
}

/// Every row the inbound rules can write, for "nothing changed" checks.
async fn footprint(c: &Client) -> Vec<i64> {
    let mut v = Vec::new();
    for sql in [
        "SELECT count(*) FROM email_suppressions",
        "SELECT count(*) FROM inbound_mail_events",
        "SELECT count(*) FROM contact_email_holds",
        "SELECT count(*) FROM kanban_cards",
        "SELECT count(*) FROM kanban_cards WHERE state = 'blocked'",
        "SELECT count(*) FROM engagement_clocks",
        "SELECT count(*) FROM agent_alerts",
    ] {
        v.push(count(c, sql).await);
    }
    v
}

async fn suppression_reasons(c: &Client, email: &str) -> Vec<String> {
    c.query(
        "SELECT reason FROM email_suppressions WHERE lower(email) = lower($1) ORDER BY created_at",
        &[&email],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn card_state(c: &Client, id: Uuid) -> (String, Option<String>) {
    let r = c
        .query_one(
            "SELECT state, blocked_reason FROM kanban_cards WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn send(w: &mut World, mailer: &Mailer, at: DateTime<Utc>) -> autopilot::email::SendReport {
    send_approved(
        &mut w.c,
        w.tenant,
        None,
        None,
        &TenantSettings::default(),
        Some(mailer),
        50,
        at,
    )
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Bounces and complaints

#[tokio::test]
async fn postfix_hard_bounce_suppresses_the_address_before_the_next_send_and_a_second_ingestion_changes_nothing(
) {
    let mut w = world().await;
    the_card(&w).await;
    let m = only_message(&ingest(&w, &fixture("postfix_bounce_5.1.1.eml")));
    assert_eq!(m["result"], "bounce", "{m}");
    assert_eq!(m["status"], "5.1.1");
    assert_eq!(m["suppressed"], true);
    assert_eq!(m["card_id"], CARD);
    assert_eq!(m["tenant_id"], w.tenant.to_string());
    assert_eq!(suppression_reasons(&w.c, PAT).await, vec!["bounce"]);

    let before = footprint(&w.c).await;
    let again = only_message(&ingest(&w, &fixture("postfix_bounce_5.1.1.eml")));
    assert_eq!(again["result"], "duplicate", "{again}");
    assert_eq!(footprint(&w.c).await, before);

    // The next send to the address is refused by the suppression policy.
    let smtp = SmtpServer::start().await;
    let next = approved_card(&w, Some(w.contact), PAT).await;
    let report = send(&mut w, &mailer(&smtp.url()), now()).await;
    assert_eq!(report.sent, 0);
    assert_eq!(card_state(&w.c, next).await.0, "blocked");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn exim_bounce_returning_the_whole_message_is_matched_by_its_message_id() {
    let w = world().await;
    the_card(&w).await;
    let m = only_message(&ingest(&w, &fixture("exim_bounce_full_message.eml")));
    assert_eq!(m["result"], "bounce", "{m}");
    assert_eq!(m["status"], "5.0.0");
    assert_eq!(suppression_reasons(&w.c, PAT).await, vec!["bounce"]);
}

#[tokio::test]
async fn three_delay_notices_within_30_days_suppress_the_address_and_older_ones_do_not_count() {
    let w = world().await;
    let old_card = Uuid::new_v4();
    sent_card(
        &w,
        old_card,
        Some(w.contact),
        PAT,
        now() - Duration::days(41),
    )
    .await;
    the_card(&w).await;
    let notice = |card: Uuid, n: &str| fixture_for("postfix_delayed_4.4.1.eml", card, n);

    let old = only_message(&ingest_at(
        &w,
        &notice(old_card, "old"),
        now() - Duration::days(40),
    ));
    assert_eq!(old["result"], "soft_bounce", "{old}");
    assert_eq!(old["suppressed"], false);

    let card = Uuid::parse_str(CARD).unwrap();
    for n in ["a", "b"] {
        let m = only_message(&ingest(&w, &notice(card, n)));
        assert_eq!(m["result"], "soft_bounce", "{m}");
        assert_eq!(m["status"], "4.4.1");
        assert_eq!(m["suppressed"], false, "{m}");
    }
    assert!(suppression_reasons(&w.c, PAT).await.is_empty());
    let third = only_message(&ingest(&w, &notice(card, "c")));
    assert_eq!(third["suppressed"], true, "{third}");
    assert_eq!(suppression_reasons(&w.c, PAT).await, vec!["bounce"]);
}

#[tokio::test]
async fn arf_complaint_suppresses_the_contact_with_reason_complaint() {
    let w = world().await;
    the_card(&w).await;
    let m = only_message(&ingest(&w, &fixture("arf_complaint.eml")));
    assert_eq!(m["result"], "complaint", "{m}");
    assert_eq!(m["status"], "abuse");
    let row =
        w.c.query_one(
            "SELECT reason, contact_id FROM email_suppressions WHERE lower(email) = $1",
            &[&PAT],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "complaint");
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(w.contact));
}

// ---------------------------------------------------------------------------------------
// Replies

#[tokio::test]
async fn threaded_reply_holds_the_contact_and_its_approved_cards_creates_a_task_and_counts_as_a_touch(
) {
    let w = world().await;
    the_card(&w).await;
    // The contact's clock is overdue before the reply.
    w.c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due)
         VALUES ($1, $2, $3, $4)",
        &[
            &w.tenant,
            &w.client,
            &w.contact,
            &(now() - Duration::days(3)),
        ],
    )
    .await
    .unwrap();
    let pending = approved_card(&w, Some(w.contact), PAT).await;
    let other_contact = contact(
        &w.c,
        w.tenant,
        w.client,
        Some("sam@client.example"),
        None,
        false,
    )
    .await;
    let other = approved_card(&w, Some(other_contact), "sam@client.example").await;

    let m = only_message(&ingest(&w, &fixture("reply_threaded.eml")));
    assert_eq!(m["result"], "reply", "{m}");
    assert_eq!(m["contact_id"], w.contact.to_string());
    assert_eq!(m["held_cards"], json!([pending.to_string()]));

    let holds = count(
        &w.c,
        &format!(
            "SELECT count(*) FROM contact_email_holds WHERE contact_id = '{}' AND email = '{PAT}' AND resumed_at IS NULL",
            w.contact
        ),
    )
    .await;
    assert_eq!(holds, 1);
    let (state, reason) = card_state(&w.c, pending).await;
    assert_eq!(state, "blocked");
    assert!(reason.unwrap().contains("replied"));
    assert_eq!(card_state(&w.c, other).await.0, "approved");

    let task = w
        .c
        .query_one(
            "SELECT id, state, title, contact_id, priority FROM kanban_cards WHERE type = 'create_task'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(m["task_card_id"], task.get::<_, Uuid>(0).to_string());
    assert_eq!(task.get::<_, String>(1), "suggested");
    assert!(task.get::<_, String>(2).contains("Re: Checking in"));
    assert_eq!(task.get::<_, Option<Uuid>>(3), Some(w.contact));

    let clock = w
        .c
        .query_one(
            "SELECT last_touch_at, next_touch_due, last_touch_type FROM engagement_clocks WHERE contact_id = $1",
            &[&w.contact],
        )
        .await
        .unwrap();
    assert_eq!(clock.get::<_, DateTime<Utc>>(0), now());
    assert_eq!(clock.get::<_, DateTime<Utc>>(1), now() + Duration::days(21));
    assert_eq!(clock.get::<_, String>(2), "email");

    // Ingested again: nothing changes.
    let before = footprint(&w.c).await;
    let again = only_message(&ingest(&w, &fixture("reply_threaded.eml")));
    assert_eq!(again["result"], "duplicate");
    assert_eq!(footprint(&w.c).await, before);
}

#[tokio::test]
async fn reply_without_threading_headers_is_matched_by_sender_and_subject() {
    let w = world().await;
    the_card(&w).await;
    let m = only_message(&ingest(&w, &fixture("reply_unthreaded.eml")));
    assert_eq!(m["result"], "reply", "{m}");
    assert_eq!(m["card_id"], CARD);

    // The same mail from an address the agent never wrote to is not a reply.
    let w2 = world().await;
    let m2 = only_message(&ingest(&w2, &fixture("reply_unthreaded.eml")));
    assert_eq!(m2["result"], "ignored", "{m2}");
    assert_eq!(
        count(&w2.c, "SELECT count(*) FROM contact_email_holds").await,
        0
    );
}

#[tokio::test]
async fn out_of_office_answers_are_not_replies() {
    let w = world().await;
    the_card(&w).await;
    let pending = approved_card(&w, Some(w.contact), PAT).await;
    for f in [
        "out_of_office_auto_submitted.eml",
        "out_of_office_subject_only.eml",
    ] {
        let m = only_message(&ingest(&w, &fixture(f)));
        assert_eq!(m["result"], "auto_reply", "{f}: {m}");
    }
    assert_eq!(
        count(&w.c, "SELECT count(*) FROM contact_email_holds").await,
        0
    );
    assert_eq!(
        count(
            &w.c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'create_task'"
        )
        .await,
        0
    );
    assert_eq!(card_state(&w.c, pending).await.0, "approved");
    assert!(suppression_reasons(&w.c, PAT).await.is_empty());
}

#[tokio::test]
async fn a_contact_who_replied_gets_no_automatic_email_until_a_person_resumes_it() {
    let mut w = world().await;
    the_card(&w).await;
    let ops = profile(&w.c, w.tenant).await;
    only_message(&ingest(&w, &fixture("reply_threaded.eml")));

    // A card approved after the reply is refused by the send path.
    let smtp = SmtpServer::start().await;
    let m = mailer(&smtp.url());
    let later = approved_card(&w, Some(w.contact), PAT).await;
    let report = send(&mut w, &m, now()).await;
    assert_eq!(report.sent, 0);
    assert_eq!(card_state(&w.c, later).await.0, "blocked");
    let violation: String =
        w.c.query_one(
            "SELECT violation_type FROM agent_policy_violations ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(violation, "suppression");
    assert!(smtp.messages().is_empty());

    // A person resumes the contact; the next approved card goes out.
    let out =
        w.db.cmd()
            .args([
                "contact",
                "resume",
                &w.contact.to_string(),
                "--by",
                &ops.to_string(),
                "--json",
            ])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["resumed"], 1);
    let resumed = approved_card(&w, Some(w.contact), PAT).await;
    let report = send(&mut w, &m, now()).await;
    assert_eq!(report.sent, 1);
    assert_eq!(card_state(&w.c, resumed).await.0, "done");
    assert_eq!(smtp.messages().len(), 1);

    // Unknown contact: exit 1, naming it.
    let unknown = Uuid::new_v4();
    let out =
        w.db.cmd()
            .args(["contact", "resume", &unknown.to_string()])
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&unknown.to_string()));
}

/// The window between the send path's policy check and its claim: the reply is recorded
/// while the sender waits for its quota (a row lock the test holds), so the card it
/// already checked must still not go out.
#[tokio::test]
async fn a_reply_racing_a_send_in_the_same_hour_stops_the_card_the_sender_already_checked() {
    let w = world().await;
    the_card(&w).await;
    let pending = approved_card(&w, Some(w.contact), PAT).await;
    let smtp = SmtpServer::start().await;

    // Hold the tenant's quota row for this hour so the sender stops right after its checks.
    w.c.execute(
        "INSERT INTO agent_rate_limits (tenant_id, action_type, window_start, window_end, action_count)
         VALUES ($1, 'email_send', date_trunc('hour', $2::timestamptz, 'UTC'),
                 date_trunc('hour', $2::timestamptz, 'UTC') + interval '1 hour', 0)",
        &[&w.tenant, &now()],
    )
    .await
    .unwrap();
    let mut locker = w.db.client().await;
    let lock_tx = locker.transaction().await.unwrap();
    lock_tx
        .execute(
            "SELECT 1 FROM agent_rate_limits WHERE tenant_id = $1 FOR UPDATE",
            &[&w.tenant],
        )
        .await
        .unwrap();

    let mut sender = w.db.client().await;
    let sender_pid: i32 = sender
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let tenant = w.tenant;
    let m = mailer(&smtp.url());
    let sending = tokio::spawn(async move {
        send_approved(
            &mut sender,
            tenant,
            None,
            None,
            &TenantSettings::default(),
            Some(&m),
            50,
            now(),
        )
        .await
        .unwrap()
    });
    // Wait until the sender is blocked on the quota row (its checks are done).
    let watcher = w.db.client().await;
    loop {
        let waiting: bool = watcher
            .query_one(
                "SELECT wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = $1",
                &[&sender_pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let m = only_message(&ingest(&w, &fixture("reply_threaded.eml")));
    assert_eq!(m["result"], "reply", "{m}");
    lock_tx.commit().await.unwrap();
    let report = sending.await.unwrap();

    assert_eq!(report.sent, 0, "{report:?}");
    assert!(smtp.messages().is_empty());
    assert_eq!(card_state(&w.c, pending).await.0, "blocked");
    // The quota unit the sender took was given back.
    assert_eq!(
        count(&w.c, "SELECT action_count::bigint FROM agent_rate_limits").await,
        0
    );
}

// ---------------------------------------------------------------------------------------
// Input that is not about autopilot, or not an e-mail

#[tokio::test]
async fn unrelated_mail_and_reports_about_unknown_messages_are_ignored_with_exit_0() {
    let w = world().await;
    the_card(&w).await;
    for f in ["unrelated.eml", "postfix_bounce_unknown_message.eml"] {
        let m = only_message(&ingest(&w, &fixture(f)));
        assert_eq!(m["result"], "ignored", "{f}: {m}");
        assert!(!m["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        count(&w.c, "SELECT count(*) FROM inbound_mail_events").await,
        0
    );
    assert!(suppression_reasons(&w.c, PAT).await.is_empty());
}

#[tokio::test]
async fn malformed_input_exits_2_with_one_error_line_and_writes_nothing() {
    let w = world().await;
    the_card(&w).await;
    let before = footprint(&w.c).await;
    let cases: Vec<(Vec<u8>, Vec<&str>, &str)> = vec![
        (fixture("not_an_email.txt"), vec![], "not an e-mail"),
        (fixture("truncated_dsn.eml"), vec![], "truncated MIME"),
        (Vec::new(), vec![], "empty input"),
        (
            fixture("exim_bounce_full_message.eml"),
            vec!["--max-size", "1024"],
            "over the cap",
        ),
    ];
    for (input, extra, expected) in cases {
        let out =
            w.db.cmd()
                .args(["ingest-mail"])
                .args(&extra)
                .write_stdin(input)
                .output()
                .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(footprint(&w.c).await, before);
}

// ---------------------------------------------------------------------------------------
// Maildir

#[tokio::test]
async fn a_maildir_processed_twice_counts_each_message_once() {
    let w = world().await;
    the_card(&w).await;
    let dir = tempfile::tempdir().unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let put = |sub: &str, name: &str, fixture_name: &str| {
        std::fs::write(dir.path().join(sub).join(name), fixture(fixture_name)).unwrap();
    };
    put("new", "1748858404.M1P1.mx", "postfix_bounce_5.1.1.eml");
    put("new", "1748866507.M2P2.mx", "reply_threaded.eml");
    put("new", "1748858400.M3P3.mx", "unrelated.eml");
    put("new", "1748858401.M4P4.mx", "not_an_email.txt");
    // Already in cur/ but not yet seen by anyone: processed too.
    put(
        "cur",
        "1748858402.M5P5.mx:2,",
        "out_of_office_auto_submitted.eml",
    );
    // Still being delivered: never read.
    put("tmp", "1748858403.M6P6.mx", "arf_complaint.eml");

    let run = || {
        w.db.cmd()
            .args(["ingest-mail", "--json", "--maildir"])
            .arg(dir.path())
            .args(["--now", &now().to_rfc3339()])
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(1), "a malformed file: exit 1");
    let doc = json_of(&first);
    assert_eq!(doc["total"], 5, "{doc}");
    assert_eq!(doc["recognised"], 2, "{doc}");
    assert_eq!(doc["auto_replies"], 1, "{doc}");
    assert_eq!(doc["ignored"], 1, "{doc}");
    assert_eq!(doc["malformed"], 1, "{doc}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("new")).unwrap().count(),
        0
    );
    let mut cur: Vec<String> = std::fs::read_dir(dir.path().join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    cur.sort();
    assert_eq!(
        cur,
        vec![
            "1748858400.M3P3.mx:2,S",
            "1748858401.M4P4.mx:2,FS",
            "1748858402.M5P5.mx:2,S",
            "1748858404.M1P1.mx:2,S",
            "1748866507.M2P2.mx:2,S",
        ]
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        1
    );
    let after_first = footprint(&w.c).await;
    assert_eq!(suppression_reasons(&w.c, PAT).await, vec!["bounce"]);

    let second = run();
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(json_of(&second)["total"], 0);
    assert_eq!(footprint(&w.c).await, after_first);

    // The same files delivered again under new names: recorded messages, nothing changes.
    put("new", "1748870000.M7P7.mx", "postfix_bounce_5.1.1.eml");
    put("new", "1748870001.M8P8.mx", "reply_threaded.eml");
    let third = run();
    let doc = json_of(&third);
    assert_eq!(doc["duplicates"], 2, "{doc}");
    assert_eq!(footprint(&w.c).await, after_first);
}

// ---------------------------------------------------------------------------------------
// Rates, alerts and the sending pause

#[tokio::test]
async fn bounce_rate_over_5_percent_raises_a_critical_alert_and_pauses_sending_until_acknowledged()
{
    let mut w = world().await;
    let mut cards = Vec::new();
    for i in 0..10 {
        let id = Uuid::new_v4();
        let to = format!("c{i}@client.example");
        sent_card(
            &w,
            id,
            None,
            &to,
            now() - Duration::hours(3) + Duration::minutes(i),
        )
        .await;
        cards.push((id, to));
    }
    // One bounce of ten sends is 1/20 (the minimum sample): below 5 %, no alert.
    let bounce = |card: Uuid, n: &str| {
        let text = String::from_utf8(fixture_for("postfix_bounce_5.1.1.eml", card, n)).unwrap();
        text.replace(PAT, &format!("c{n}@client.example"))
            .into_bytes()
    };
    let m = only_message(&ingest(&w, &bounce(cards[0].0, "0")));
    assert_eq!(m["result"], "bounce", "{m}");
    assert_eq!(count(&w.c, "SELECT count(*) FROM agent_alerts").await, 0);
    only_message(&ingest(&w, &bounce(cards[1].0, "1")));
    let alert = w
        .c
        .query_one(
            "SELECT id, severity, message FROM agent_alerts WHERE alert_type = 'email_bounce_rate' AND NOT acknowledged",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(alert.get::<_, String>(1), "critical");
    assert!(alert
        .get::<_, String>(2)
        .contains("2 of the last 10 sends bounced"));

    // Sending pauses: the approved card stays approved, not sent.
    let smtp = SmtpServer::start().await;
    let m = mailer(&smtp.url());
    let waiting = approved_card(&w, None, "fresh@client.example").await;
    let report = send(&mut w, &m, now()).await;
    assert_eq!(report.sent, 0, "{report:?}");
    assert_eq!(card_state(&w.c, waiting).await.0, "approved");
    let reason: String =
        w.c.query_one("SELECT reason FROM agent_policy_violations", &[])
            .await
            .unwrap()
            .get(0);
    assert!(reason.contains("paused"), "{reason}");

    // Status reports the rates and the pause.
    let out =
        w.db.cmd()
            .args([
                "status",
                "--json",
                "--tenant",
                &w.tenant.to_string(),
                "--now",
                &now().to_rfc3339(),
            ])
            .output()
            .unwrap();
    let doc = json_of(&out);
    let fb = &doc["tenants"][0]["mail_feedback"];
    assert_eq!(fb["sends"], 10, "{doc}");
    assert_eq!(fb["bounces"], 2);
    assert_eq!(fb["bounce_rate"], 0.2);
    assert!(fb["sending_paused"].is_string());

    // Acknowledged: sending resumes (the rate alone does not re-open it without a new bounce).
    let ack =
        w.db.cmd()
            .args(["ack-alert", &alert.get::<_, Uuid>(0).to_string()])
            .output()
            .unwrap();
    assert!(ack.status.success());
    let report = send(&mut w, &m, now() + Duration::minutes(5)).await;
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn one_complaint_in_the_last_100_sends_raises_the_complaint_alert() {
    let w = world().await;
    the_card(&w).await;
    only_message(&ingest(&w, &fixture("arf_complaint.eml")));
    let n = count(
        &w.c,
        "SELECT count(*) FROM agent_alerts WHERE alert_type = 'email_complaint_rate' AND severity = 'critical' AND NOT acknowledged",
    )
    .await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn reflections_carry_the_rates_of_the_last_100_sends() {
    let w = world().await;
    the_card(&w).await;
    sent_card(
        &w,
        Uuid::new_v4(),
        None,
        "x@client.example",
        now() - Duration::hours(4),
    )
    .await;
    only_message(&ingest(&w, &fixture("reply_threaded.eml")));
    let run: Uuid = w
        .c
        .query_one(
            "INSERT INTO agent_autonomous_runs (tenant_id, cycle_number) VALUES ($1, 1) RETURNING id",
            &[&w.tenant],
        )
        .await
        .unwrap()
        .get(0);
    let delta: Value = w
        .c
        .query_one(
            "INSERT INTO agent_hourly_reflections (tenant_id, run_id, summary, metrics_delta, created_at)
             VALUES ($1, $2, 's', '{\"overdue\": 1}', $3) RETURNING metrics_delta",
            &[&w.tenant, &run, &now()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delta["overdue"], 1, "{delta}");
    let fb = &delta["mail_feedback"];
    assert_eq!(fb["sends"], 2, "{delta}");
    assert_eq!(fb["replies"], 1);
    assert_eq!(fb["reply_rate"], 0.5);
    assert_eq!(fb["bounce_rate"], 0.0);
}

// ---------------------------------------------------------------------------------------
// The host's inbox, read by the cycle's React phase

#[tokio::test]
async fn the_cycle_reads_new_host_inbox_rows_once_and_reports_rates_in_reflection_and_metrics() {
    let w = world().await;
    enable_agent_globally(&w.c).await;
    the_card(&w).await;
    // The host's Gmail table, as Salesmod keeps it.
    w.c.batch_execute(
        "CREATE TABLE public.gmail_messages (
             id uuid PRIMARY KEY DEFAULT gen_random_uuid(), org_id uuid NOT NULL, contact_id uuid,
             from_email text, gmail_thread_id text, subject text, received_at timestamptz NOT NULL)",
    )
    .await
    .unwrap();
    let insert = "INSERT INTO gmail_messages (org_id, contact_id, from_email, gmail_thread_id, subject, received_at)
                  VALUES ($1, $2, $3, 'thr-1', $4, $5)";
    w.c.execute(
        insert,
        &[
            &w.tenant,
            &None::<Uuid>,
            &"Pat@client.example",
            &"Re: Checking in",
            &(now() - Duration::hours(1)),
        ],
    )
    .await
    .unwrap();
    // Mail from someone the agent never wrote to: left alone.
    w.c.execute(
        insert,
        &[
            &w.tenant,
            &None::<Uuid>,
            &"stranger@else.example",
            &"Hello",
            &(now() - Duration::minutes(50)),
        ],
    )
    .await
    .unwrap();
    let pending = approved_card(&w, Some(w.contact), PAT).await;
    let metrics = tempfile::tempdir().unwrap();
    let metrics_file = metrics.path().join("autopilot.prom");

    let cycle = |at: DateTime<Utc>| {
        w.db.cmd()
            .args([
                "run-cycle",
                "--json",
                "--tenant",
                &w.tenant.to_string(),
                "--now",
                &at.to_rfc3339(),
            ])
            .arg("--metrics-file")
            .arg(&metrics_file)
            .output()
            .unwrap()
    };
    let out = cycle(now());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["tenants"][0]["status"], "completed");
    assert_eq!(card_state(&w.c, pending).await.0, "blocked");
    assert_eq!(
        count(&w.c, "SELECT count(*) FROM inbound_mail_events WHERE source = 'host_inbox' AND kind = 'reply'").await,
        1
    );
    assert_eq!(
        count(
            &w.c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'create_task'"
        )
        .await,
        1
    );
    let delta: Value =
        w.c.query_one("SELECT metrics_delta FROM agent_hourly_reflections", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(delta["mail_feedback"]["reply_rate"], 1.0, "{delta}");
    let prom = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(
        prom.contains(&format!(
            "autopilot_email_reply_ratio{{tenant_id=\"{}\"}} 1\n",
            w.tenant
        )),
        "{prom}"
    );
    assert!(prom.contains("# TYPE autopilot_email_bounce_ratio gauge"));

    // The next hour: one new row; the old ones are not read again.
    w.c.execute(
        insert,
        &[
            &w.tenant,
            &None::<Uuid>,
            &"pat@client.example",
            &"Re: Checking in",
            &(now() + Duration::minutes(20)),
        ],
    )
    .await
    .unwrap();
    let out = cycle(now() + Duration::hours(1));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &w.c,
            "SELECT count(*) FROM inbound_mail_events WHERE source = 'host_inbox'"
        )
        .await,
        2
    );
    let cursor: DateTime<Utc> =
        w.c.query_one(
            "SELECT last_at FROM inbound_mail_cursors WHERE source = 'gmail_messages'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursor, now() + Duration::minutes(20));
}

#[tokio::test]
async fn without_host_inbox_tables_the_cycle_runs_as_before() {
    let w = world().await;
    enable_agent_globally(&w.c).await;
    let out =
        w.db.cmd()
            .args([
                "run-cycle",
                "--json",
                "--tenant",
                &w.tenant.to_string(),
                "--now",
                &now().to_rfc3339(),
            ])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["tenants"][0]["status"], "completed");
    assert_eq!(
        count(&w.c, "SELECT count(*) FROM inbound_mail_cursors").await,
        0
    );
}

#[tokio::test]
async fn a_held_contact_gets_no_follow_up_draft_when_its_clock_falls_due_until_resumed() {
    let w = world().await;
    enable_agent_globally(&w.c).await;
    the_card(&w).await;
    only_message(&ingest(&w, &fixture("reply_threaded.eml")));
    let drafts =
        "SELECT count(*) FROM kanban_cards WHERE type = 'send_email' AND state = 'suggested'";
    let cycle = |at: DateTime<Utc>| {
        let out =
            w.db.cmd()
                .args([
                    "run-cycle",
                    "--json",
                    "--tenant",
                    &w.tenant.to_string(),
                    "--now",
                    &at.to_rfc3339(),
                ])
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // 30 days on, the reply's touch (21 days) is overdue, but the contact is held.
    cycle(now() + Duration::days(30));
    assert_eq!(count(&w.c, drafts).await, 0);
    let out =
        w.db.cmd()
            .args(["contact", "resume", &w.contact.to_string()])
            .output()
            .unwrap();
    assert!(out.status.success());
    cycle(now() + Duration::days(30) + Duration::hours(1));
    assert_eq!(count(&w.c, drafts).await, 1);
}

#[tokio::test]
async fn eight_concurrent_ingestions_of_one_reply_apply_it_exactly_once() {
    let w = world().await;
    the_card(&w).await;
    let mut children = Vec::new();
    for _ in 0..8 {
        let mut cmd = w.db.tokio_cmd();
        cmd.args(["ingest-mail", "--json", "--now", &now().to_rfc3339()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    // All eight are running; now each gets the same message.
    for child in children.iter_mut() {
        let mut stdin = child.stdin.take().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(&fixture("reply_threaded.eml"))
                .await
                .unwrap();
        });
    }
    let mut results = Vec::new();
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        results.push(only_message(&out)["result"].as_str().unwrap().to_string());
    }
    results.sort();
    let replies = results.iter().filter(|r| *r == "reply").count();
    let duplicates = results.iter().filter(|r| *r == "duplicate").count();
    assert_eq!((replies, duplicates), (1, 7), "{results:?}");
    assert_eq!(
        count(&w.c, "SELECT count(*) FROM contact_email_holds").await,
        1
    );
    assert_eq!(
        count(
            &w.c,
            "SELECT count(*) FROM kanban_cards WHERE type = 'create_task'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&w.c, "SELECT count(*) FROM inbound_mail_events").await,
        1
    );
}

#[tokio::test]
async fn an_unreachable_database_is_exit_75_so_the_mta_retries() {
    let w = world().await;
    let out =
        w.db.cmd()
            .env(
                "DATABASE_URL",
                "postgres://nobody@127.0.0.1:1/none?connect_timeout=2",
            )
            .args(["ingest-mail"])
            .write_stdin(fixture("postfix_bounce_5.1.1.eml"))
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn people_see_only_their_tenants_events_and_holds_and_may_resume_but_not_forge_them() {
    let w = world().await;
    the_card(&w).await;
    only_message(&ingest(&w, &fixture("reply_threaded.eml")));
    let mine = profile(&w.c, w.tenant).await;
    let other_tenant = tenant(&w.c, "Other AMC", true).await;
    let theirs = profile(&w.c, other_tenant).await;

    let me = w.db.as_authenticated(mine).await;
    assert_eq!(
        count(&me, "SELECT count(*) FROM contact_email_holds").await,
        1
    );
    assert_eq!(
        count(&me, "SELECT count(*) FROM inbound_mail_events").await,
        1
    );
    let them = w.db.as_authenticated(theirs).await;
    assert_eq!(
        count(&them, "SELECT count(*) FROM contact_email_holds").await,
        0
    );
    assert_eq!(
        count(&them, "SELECT count(*) FROM inbound_mail_events").await,
        0
    );
    let anon = w.db.as_anon().await;
    assert!(anon
        .query("SELECT 1 FROM contact_email_holds", &[])
        .await
        .is_err());
    assert!(anon
        .query("SELECT 1 FROM inbound_mail_cursors", &[])
        .await
        .is_err());

    // A person resumes in the product; nobody but the agent writes events.
    assert_eq!(
        me.execute(
            "UPDATE contact_email_holds SET resumed_at = now(), resumed_by = $1",
            &[&mine]
        )
        .await
        .unwrap(),
        1
    );
    assert!(me
        .execute(
            "INSERT INTO inbound_mail_events (tenant_id, message_key, kind) VALUES ($1, 'x', 'reply')",
            &[&w.tenant]
        )
        .await
        .is_err());
    assert!(me
        .query("SELECT 1 FROM inbound_mail_cursors", &[])
        .await
        .is_err());
}

#[tokio::test]
async fn a_host_inbox_table_of_another_shape_is_named_in_the_reflection_not_a_failed_cycle() {
    let w = world().await;
    enable_agent_globally(&w.c).await;
    w.c.batch_execute(
        "CREATE TABLE public.gmail_messages (id text PRIMARY KEY, org_id text, from_email text, received_at text)",
    )
    .await
    .unwrap();
    w.c.execute(
        "INSERT INTO gmail_messages VALUES ('m1', $1, 'pat@client.example', 'last tuesday')",
        &[&w.tenant.to_string()],
    )
    .await
    .unwrap();
    let out =
        w.db.cmd()
            .args([
                "run-cycle",
                "--json",
                "--tenant",
                &w.tenant.to_string(),
                "--now",
                &now().to_rfc3339(),
            ])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["tenants"][0]["status"], "completed");
    let insights: Value =
        w.c.query_one("SELECT insights FROM agent_hourly_reflections", &[])
            .await
            .unwrap()
            .get(0);
    assert!(
        insights
            .to_string()
            .contains("gmail_messages could not be read"),
        "{insights}"
    );
}
