//! E-mail delivery under SMTP faults (SPEC §5a, "at most once"), driving the real binary
//! (`run-cycle`) against the in-process SMTP listener told to misbehave: hang or close
//! after the final dot, close in the middle of DATA, and 421/451/550 at every step.
//!
//! After the final dot the outcome is ambiguous (the relay may have the message): the card
//! is parked (`blocked`, `blocked_code = 'delivery_unknown'`) with an alert, counted in the
//! reflection and `status`, and never re-sent by a later cycle; only `autopilot card
//! requeue|close` moves it. Before the final dot a failure is clean and the card is retried.
//! Each test prints the counts it measured.

use crate::smtp;

use crate::common::*;
use chrono::{DateTime, Duration, DurationRound, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use smtp::{Behaviour, SmtpServer, Step};
use tokio_postgres::Client;
use uuid::Uuid;

const FROM: &str = "Autopilot <agent@amc.example>";

/// The cycles run at whole hours from the next one on, an hour apart (each its own window).
fn hour(n: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(n + 1)
}

/// A tenant with one approved `send_email` card (to a contact without a clock, so the
/// planner drafts nothing); returns (tenant, card).
async fn tenant_with_approved_card(c: &Client, name: &str, body: &str) -> (Uuid, Uuid) {
    let t = tenant(c, name, true).await;
    let cl = client_row(c, t, "Lender").await;
    let payload = json!({"to": format!("{}@lender.example", name.to_lowercase()), "subject": "Checking in", "body": body});
    let card = c
        .query_one(
            "INSERT INTO kanban_cards (tenant_id, client_id, type, title, state, action_payload)
             VALUES ($1, $2, 'send_email', 'Follow up', 'approved', $3) RETURNING id",
            &[&t, &cl, &payload],
        )
        .await
        .unwrap()
        .get(0);
    (t, card)
}

/// `run-cycle` for one tenant at `now`, sending through `url`.
async fn cycle(db: &TestDb, tenant: Uuid, url: &str, now: DateTime<Utc>) -> std::process::Output {
    cycle_with(db, tenant, url, now, &[]).await
}

async fn cycle_with(
    db: &TestDb,
    tenant: Uuid,
    url: &str,
    now: DateTime<Utc>,
    env: &[(&str, &str)],
) -> std::process::Output {
    db.tokio_cmd()
        .envs(env.iter().copied())
        .args(["run-cycle", "--json", "--tenant"])
        .arg(tenant.to_string())
        .arg("--now")
        .arg(now.to_rfc3339())
        .env("SMTP_URL", url)
        .env("EMAIL_FROM", FROM)
        .env("SMTP_TIMEOUT_SECS", "1")
        .output()
        .await
        .unwrap()
}

fn assert_ran(out: &std::process::Output, what: &str) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(out);
    assert_eq!(doc["tenants"][0]["status"], "completed", "{what}: {doc}");
    doc
}

async fn card_row(c: &Client, card: Uuid) -> (String, Option<String>, Option<String>) {
    let r = c
        .query_one(
            "SELECT state, blocked_code, message_id FROM kanban_cards WHERE id = $1",
            &[&card],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Deliveries of `message_id` the server took in full.
fn deliveries(server: &SmtpServer, message_id: &str) -> usize {
    server
        .messages()
        .iter()
        .filter(|m| m.header("Message-ID").as_deref() == Some(message_id))
        .count()
}

/// A body larger than the most a client socket buffers (tcp_wmem's maximum) plus the
/// server's receive buffer, so a drop in the middle of DATA reaches the client while it
/// is still writing.
fn big_body() -> String {
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let line = "a line of a long message about appraisal turn times, padded to length.\r\n";
    line.repeat((wmem_max + (1 << 20)) / line.len() + 1)
}

struct Case {
    name: String,
    behaviour: Behaviour,
    big: bool,
    error_type: &'static str,
    /// State after the failing cycle.
    state: &'static str,
    parked: bool,
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        Case {
            name: "hang after data".into(),
            behaviour: Behaviour::HangAfterData,
            big: false,
            error_type: "timeout",
            state: "blocked",
            parked: true,
        },
        Case {
            name: "close after data".into(),
            behaviour: Behaviour::CloseAfterData,
            big: false,
            error_type: "connection",
            state: "blocked",
            parked: true,
        },
        Case {
            // A message larger than the socket buffers: the drop reaches the client while
            // it is still writing, before the final dot.
            name: "close mid data".into(),
            behaviour: Behaviour::CloseMidData,
            big: true,
            error_type: "connection",
            state: "approved",
            parked: false,
        },
    ];
    let steps = [
        Step::Greeting,
        Step::Ehlo,
        Step::Mail,
        Step::Rcpt,
        Step::Data,
        Step::EndOfData,
    ];
    let replies = [
        ("421 4.3.2 Service shutting down", "4xx"),
        ("451 4.3.0 Temporary local problem", "4xx"),
        ("550 5.7.1 Refused by local policy", "5xx"),
    ];
    for step in steps {
        for (reply, error_type) in replies {
            // A permanent refusal of this card's recipient or message blocks the card; one
            // before RCPT is about the relay or the sender, and the card waits for it.
            let card_refused =
                error_type == "5xx" && matches!(step, Step::Rcpt | Step::Data | Step::EndOfData);
            v.push(Case {
                name: format!("{} at {step:?}", &reply[..3]),
                behaviour: Behaviour::FailAt(step, reply.into()),
                big: false,
                error_type,
                state: if card_refused { "blocked" } else { "approved" },
                parked: false,
            });
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_id_is_delivered_at_most_once_across_cycles_whatever_the_smtp_fault() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let big_body = big_body();
    let cases = cases();
    let mut setups = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let server = SmtpServer::start().await;
        server.set_behaviour(case.behaviour.clone());
        let body = if case.big {
            big_body.as_str()
        } else {
            "Hello,\nhow are the appraisals going?"
        };
        let (tenant, card) = tenant_with_approved_card(&c, &format!("T{i}"), body).await;
        setups.push((server, tenant, card));
    }

    // Three cycles an hour apart: the first meets the fault, then the server behaves.
    let mut first: Vec<Value> = Vec::new();
    for n in 0..3 {
        let started = std::time::Instant::now();
        let runs = futures::stream::iter(setups.iter().map(|(server, tenant, _)| {
            let db = &db;
            async move { cycle(db, *tenant, &server.url(), hour(n)).await }
        }))
        .buffered(6)
        .collect::<Vec<_>>()
        .await;
        println!("cycle {n}: {} runs in {:?}", runs.len(), started.elapsed());
        for (out, case) in runs.iter().zip(&cases) {
            let doc = assert_ran(out, &format!("cycle {n}, {}", case.name));
            if n == 0 {
                first.push(doc);
            }
        }
        if n == 0 {
            // State and classification right after the faulty cycle.
            for ((_, tenant, card), case) in setups.iter().zip(&cases) {
                let (state, code, message_id) = card_row(&c, *card).await;
                assert_eq!(state, case.state, "{}", case.name);
                assert_eq!(
                    code.as_deref(),
                    case.parked.then_some("delivery_unknown"),
                    "{}",
                    case.name
                );
                assert_eq!(
                    message_id,
                    Some(format!("<card-{card}@amc.example>")),
                    "{}",
                    case.name
                );
                let types: Vec<String> = c
                    .query(
                        "SELECT error_type FROM email_provider_failures WHERE tenant_id = $1",
                        &[tenant],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                assert_eq!(types, vec![case.error_type.to_string()], "{}", case.name);
            }
            for (server, _, _) in &setups {
                server.set_behaviour(Behaviour::Accept);
            }
        }
    }

    println!(
        "{:<22} {:<11} {:<9} {:>10} {:>8}",
        "case", "error_type", "state", "deliveries", "parked"
    );
    let mut total_deliveries = 0;
    for ((server, tenant, card), case) in setups.iter().zip(&cases) {
        let message_id = format!("<card-{card}@amc.example>");
        let n = deliveries(server, &message_id);
        total_deliveries += n;
        let (state, code, _) = card_row(&c, *card).await;
        println!(
            "{:<22} {:<11} {:<9} {:>10} {:>8}",
            case.name,
            case.error_type,
            state,
            n,
            code.is_some()
        );
        assert!(n <= 1, "{}: {message_id} delivered {n} times", case.name);
        if case.parked {
            // The server has the message; no later cycle sent it again.
            assert_eq!(n, 1, "{}", case.name);
            assert_eq!(state, "blocked", "{}", case.name);
            assert_eq!(code.as_deref(), Some("delivery_unknown"));
        } else if case.state == "approved" {
            // A clean failure: retried once the server behaves, delivered exactly once.
            assert_eq!((n, state.as_str()), (1, "done"), "{}", case.name);
        } else {
            assert_eq!((n, state.as_str()), (0, "blocked"), "{}", case.name);
        }
        // The faulty cycle's reflection names what a person must do, only for parked cards.
        let blockers: Value = c
            .query_one(
                "SELECT blockers FROM agent_hourly_reflections WHERE tenant_id = $1 ORDER BY created_at LIMIT 1",
                &[tenant],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            blockers.to_string().contains("delivery unknown"),
            case.parked,
            "{}: {blockers}",
            case.name
        );
        let alerts = count_for(
            &c,
            "SELECT count(*) FROM agent_alerts WHERE tenant_id = $1 AND alert_type = 'email_delivery_unknown' AND severity = 'warning'",
            *tenant,
        )
        .await;
        assert_eq!(alerts, i64::from(case.parked), "{}", case.name);
    }
    let parked = cases.iter().filter(|c| c.parked).count();
    println!(
        "{} cases, 3 cycles each: {total_deliveries} deliveries, {parked} parked, 0 delivered twice",
        cases.len()
    );
}

async fn count_for(c: &Client, sql: &str, tenant: Uuid) -> i64 {
    c.query_one(sql, &[&tenant]).await.unwrap().get(0)
}

/// A tenant whose card was parked by a cycle against a server that hung after the data.
async fn parked_card(db: &TestDb, c: &Client, server: &SmtpServer) -> (Uuid, Uuid) {
    let (tenant, card) = tenant_with_approved_card(c, "Parked", "Hello,\nany news?").await;
    server.set_behaviour(Behaviour::HangAfterData);
    assert_ran(&cycle(db, tenant, &server.url(), hour(0)).await, "cycle");
    server.set_behaviour(Behaviour::Accept);
    assert_eq!(
        card_row(c, card).await.1.as_deref(),
        Some("delivery_unknown")
    );
    (tenant, card)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_card_is_counted_in_status_and_only_a_requeue_sends_it_again() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let server = SmtpServer::start().await;
    let (tenant, card) = parked_card(&db, &c, &server).await;
    let message_id = format!("<card-{card}@amc.example>");

    let status = db
        .tokio_cmd()
        .args(["status", "--json", "--tenant"])
        .arg(tenant.to_string())
        .output()
        .await
        .unwrap();
    let doc = json_of(&status);
    assert_eq!(doc["tenants"][0]["delivery_unknown_cards"], 1, "{doc}");
    let reason: String = c
        .query_one(
            "SELECT blocked_reason FROM kanban_cards WHERE id = $1",
            &[&card],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains(&message_id), "{reason}");
    assert!(
        reason.contains(&format!("autopilot card requeue {card}")),
        "{reason}"
    );

    // Another cycle leaves it alone.
    assert_ran(&cycle(&db, tenant, &server.url(), hour(1)).await, "cycle 2");
    assert_eq!(deliveries(&server, &message_id), 1);
    let alert: (i32, Value) = {
        let r = c
            .query_one(
                "SELECT occurrences, metadata FROM agent_alerts WHERE tenant_id = $1 AND alert_type = 'email_delivery_unknown'",
                &[&tenant],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(alert.0, 1, "one alert, raised once: {}", alert.1);
    assert_eq!(alert.1["cards"][0]["message_id"], message_id.as_str());

    // The operator found nothing in the mailbox: re-queue, and the next cycle sends it.
    let out = db
        .tokio_cmd()
        .args(["card", "requeue", "--json"])
        .arg(card.to_string())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&out);
    assert_eq!(
        (
            doc["action"].as_str(),
            doc["state"].as_str(),
            doc["message_id"].as_str()
        ),
        (
            Some("requeued"),
            Some("approved"),
            Some(message_id.as_str())
        )
    );
    assert_eq!(
        card_row(&c, card).await,
        ("approved".into(), None, Some(message_id.clone()))
    );
    assert_ran(&cycle(&db, tenant, &server.url(), hour(2)).await, "cycle 3");
    assert_eq!(card_row(&c, card).await.0, "done");
    assert_eq!(
        deliveries(&server, &message_id),
        2,
        "sent again with the same Message-ID, by the operator's decision"
    );
    // Once done it cannot be re-queued again.
    let again = db
        .tokio_cmd()
        .args(["card", "requeue"])
        .arg(card.to_string())
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("not parked with delivery unknown"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_parked_card_marks_it_done_and_counts_the_contacts_touch() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let server = SmtpServer::start().await;
    let (tenant, card) = parked_card(&db, &c, &server).await;
    let client: Uuid = c
        .query_one("SELECT client_id FROM kanban_cards WHERE id = $1", &[&card])
        .await
        .unwrap()
        .get(0);
    let pat = contact(&c, tenant, client, Some("pat@lender.example"), None, false).await;
    c.execute(
        "UPDATE kanban_cards SET contact_id = $2 WHERE id = $1",
        &[&card, &pat],
    )
    .await
    .unwrap();

    let out = db
        .tokio_cmd()
        .args(["card", "close", "--json"])
        .arg(card.to_string())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["state"], "done");
    let r = c
        .query_one(
            "SELECT state, blocked_code, blocked_reason, executed_at IS NOT NULL FROM kanban_cards WHERE id = $1",
            &[&card],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "done");
    assert_eq!(r.get::<_, Option<String>>(1), None);
    assert_eq!(r.get::<_, Option<String>>(2), None);
    assert!(r.get::<_, bool>(3));
    assert_eq!(
        count_for(
            &c,
            "SELECT count(*) FROM engagement_clocks WHERE tenant_id = $1 AND contact_id IS NOT NULL AND last_touch_type = 'email' AND last_touch_by IS NULL",
            tenant
        )
        .await,
        1
    );
    assert_ran(&cycle(&db, tenant, &server.url(), hour(1)).await, "cycle 2");
    assert_eq!(server.messages().len(), 1, "nothing sent again");
}

#[tokio::test]
async fn card_command_refuses_a_malformed_unknown_or_unparked_card_and_changes_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let (_, card) = tenant_with_approved_card(&c, "Plain", "hi").await;

    let out = db
        .cmd()
        .args(["card", "requeue", "not-a-uuid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.lines().count() == 1,
        "{stderr}"
    );

    let unknown = Uuid::new_v4();
    let out = db
        .cmd()
        .args(["card", "close"])
        .arg(unknown.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("card {unknown} not found")),
        "{stderr}"
    );

    for verb in ["requeue", "close"] {
        let out = db
            .cmd()
            .args(["card", verb])
            .arg(card.to_string())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{verb}");
    }
    assert_eq!(card_row(&c, card).await, ("approved".into(), None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_approved_email_is_the_only_one_the_contact_gets_in_that_cycle_and_the_next() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let server = SmtpServer::start().await;
    let t = tenant(&c, "Summit", true).await;
    let cl = client_row(&c, t, "Acme").await;
    // Ann's card names her; Ben's names only his address (as a person may type it).
    let ann = contact(&c, t, cl, Some("ann@acme.example"), None, false).await;
    contact(&c, t, cl, Some("ben@acme.example"), None, false).await;
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due)
         SELECT tenant_id, client_id, id, $2 FROM contacts WHERE tenant_id = $1",
        &[&t, &(hour(0) - Duration::days(10))],
    )
    .await
    .unwrap();
    for (contact, to) in [(Some(ann), "ann@acme.example"), (None, "Ben@Acme.example")] {
        c.execute(
            "INSERT INTO kanban_cards (tenant_id, client_id, contact_id, type, title, state, action_payload)
             VALUES ($1, $2, $3, 'send_email', 'written by a person', 'approved', $4)",
            &[&t, &cl, &contact, &json!({"to": to, "subject": "Our new rates", "body": "Hi,\nsee attached."})],
        )
        .await
        .unwrap();
    }

    for n in 0..2 {
        assert_ran(&cycle(&db, t, &server.url(), hour(n)).await, "cycle");
    }

    let mut rcpts: Vec<String> = server
        .messages()
        .iter()
        .map(|m| m.rcpt_to[0].to_lowercase())
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["ann@acme.example", "ben@acme.example"]);
    let drafts = count_for(
        &c,
        "SELECT count(*) FROM kanban_cards WHERE tenant_id = $1 AND type = 'send_email' AND agent_target IS NOT NULL",
        t,
    )
    .await;
    assert_eq!(
        drafts, 0,
        "no agent draft beside or right after a person's e-mail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_relay_dropping_the_connection_mid_data_is_a_clean_failure_not_a_crash() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = smtp::TestPki::new(dir.path());
    let server = SmtpServer::start_tls(smtp::TlsMode::Implicit, &pki).await;
    server.set_behaviour(Behaviour::CloseMidData);
    let (tenant, card) = tenant_with_approved_card(&c, "Tls", &big_body()).await;
    let ca = pki.ca_pem.display().to_string();

    // The binary restores SIGPIPE's default action: a write to the reset TLS connection
    // must come back as an error, not kill the process.
    let out = cycle_with(
        &db,
        tenant,
        &server.url(),
        hour(0),
        &[("SMTP_CA_FILE", &ca)],
    )
    .await;

    assert_ran(&out, "cycle");
    assert_eq!(card_row(&c, card).await.0, "approved");
    let error_type: String = c
        .query_one(
            "SELECT error_type FROM email_provider_failures WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(error_type, "connection");
    assert!(server.messages().is_empty());
}
