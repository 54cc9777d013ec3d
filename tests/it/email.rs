//! E-mail delivery (SPEC §5a): approved `send_email` cards go out over real SMTP (an
//! in-process server) at most once, within the hourly limit across runners and time zones,
//! never to a suppressed address, with failures classified, a circuit breaker, bounce
//! suppression and recovery of cards left `executing`.

use crate::smtp;

use crate::common::*;
use autopilot::email::{send_approved, Mailer, MailerConfig, SendReport};
use autopilot::settings::TenantSettings;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use smtp::{Behaviour, SmtpServer};
use tokio_postgres::Client;
use uuid::Uuid;

const FROM: &str = "Autopilot <agent@amc.example>";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 14, 50, 0).unwrap()
}

fn mailer_for(url: &str) -> Mailer {
    let cfg = MailerConfig::from_vars(|k| match k {
        "SMTP_URL" => Some(url.to_string()),
        "EMAIL_FROM" => Some(FROM.to_string()),
        "SMTP_TIMEOUT_SECS" => Some("1".to_string()),
        _ => None,
    })
    .unwrap()
    .unwrap();
    Mailer::new(cfg).unwrap()
}

struct Fixture {
    db: TestDb,
    c: Client,
    tenant: Uuid,
    client: Uuid,
    settings: TenantSettings,
}

async fn fixture(settings: Value) -> Fixture {
    let db = TestDb::new().await;
    let c = db.client().await;
    let tenant = tenant_with_settings(&c, "Acme AMC", settings.clone()).await;
    let client = client_row(&c, tenant, "Lender One").await;
    let settings = TenantSettings::parse(&settings).unwrap();
    Fixture {
        db,
        c,
        tenant,
        client,
        settings,
    }
}

/// An approved send_email card; `age_min` minutes old (older cards go first).
async fn approved_card(
    c: &Client,
    tenant: Uuid,
    client: Uuid,
    contact: Option<Uuid>,
    to: &str,
    age_min: i64,
) -> Uuid {
    let payload = json!({"to": to, "subject": "Checking in", "body": "Hello,\nhow are the appraisals going?"});
    c.query_one(
        "INSERT INTO kanban_cards (tenant_id, client_id, contact_id, type, title, state, action_payload, created_at)
         VALUES ($1, $2, $3, 'send_email', 'Follow up', 'approved', $4, $5) RETURNING id",
        &[&tenant, &client, &contact, &payload, &(now() - Duration::minutes(age_min))],
    )
    .await
    .unwrap()
    .get(0)
}

async fn send(f: &mut Fixture, mailer: Option<&Mailer>) -> SendReport {
    send_approved(
        &mut f.c,
        f.tenant,
        None,
        None,
        &f.settings,
        mailer,
        50,
        now(),
    )
    .await
    .unwrap()
}

async fn card_state(c: &Client, card: Uuid) -> String {
    c.query_one("SELECT state FROM kanban_cards WHERE id = $1", &[&card])
        .await
        .unwrap()
        .get(0)
}

async fn states(c: &Client, tenant: Uuid, state: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM kanban_cards WHERE tenant_id = $1 AND state = $2",
        &[&tenant, &state],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn sent_card_is_one_well_formed_message_and_resets_the_contacts_clock() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    let ops = profile(&f.c, f.tenant).await;
    let contact = contact(
        &f.c,
        f.tenant,
        f.client,
        Some("pat@lender.example"),
        None,
        false,
    )
    .await;
    f.c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, last_touch_at, last_touch_type, last_touch_by, next_touch_due)
         VALUES ($1, $2, $3, $4, 'call', $5, $6)",
        &[&f.tenant, &f.client, &contact, &(now() - Duration::days(26)), &ops, &(now() - Duration::days(5))],
    )
    .await
    .unwrap();
    let card = approved_card(
        &f.c,
        f.tenant,
        f.client,
        Some(contact),
        "pat@lender.example",
        5,
    )
    .await;

    let report = send(&mut f, Some(&mailer_for(&smtp.url()))).await;

    assert_eq!((report.attempted, report.sent, report.failed), (1, 1, 0));
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.mail_from, "agent@amc.example");
    assert_eq!(m.rcpt_to, vec!["pat@lender.example".to_string()]);
    assert_eq!(m.header("From").as_deref(), Some(FROM));
    assert_eq!(m.header("To").as_deref(), Some("pat@lender.example"));
    assert_eq!(m.header("Subject").as_deref(), Some("Checking in"));
    let date = DateTime::parse_from_rfc2822(&m.header("Date").unwrap()).unwrap();
    assert_eq!(date, now());
    let expected_id = format!("<card-{card}@amc.example>");
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some(expected_id.as_str())
    );
    assert!(
        m.data.contains("how are the appraisals going?"),
        "{}",
        m.data
    );

    let row =
        f.c.query_one(
            "SELECT state, executed_at, message_id FROM kanban_cards WHERE id = $1",
            &[&card],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "done");
    assert_eq!(row.get::<_, Option<DateTime<Utc>>>(1), Some(now()));
    assert_eq!(row.get::<_, Option<String>>(2), Some(expected_id));

    let clock = f
        .c
        .query_one(
            "SELECT next_touch_due > $2, last_touch_by, last_touch_type, last_touch_at FROM engagement_clocks WHERE contact_id = $1",
            &[&contact, &now()],
        )
        .await
        .unwrap();
    assert!(clock.get::<_, bool>(0), "the contact is compliant again");
    assert_eq!(
        clock.get::<_, Option<Uuid>>(1),
        None,
        "the agent's touch has no profile"
    );
    assert_eq!(clock.get::<_, Option<String>>(2).as_deref(), Some("email"));
    assert_eq!(clock.get::<_, Option<DateTime<Utc>>>(3), Some(now()));

    // Sending again finds nothing to send: the card went out once.
    let again = send(&mut f, Some(&mailer_for(&smtp.url()))).await;
    assert_eq!(again.attempted, 0);
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn hourly_limit_sends_three_of_five_and_defers_the_rest() {
    let mut f = fixture(json!({"max_emails_per_hour": 3})).await;
    let smtp = SmtpServer::start().await;
    for i in 0..5 {
        approved_card(
            &f.c,
            f.tenant,
            f.client,
            None,
            &format!("c{i}@lender.example"),
            10 - i,
        )
        .await;
    }

    let report = send(&mut f, Some(&mailer_for(&smtp.url()))).await;

    assert_eq!(smtp.messages().len(), 3);
    assert_eq!((report.sent, report.deferred_rate_limited), (3, 2));
    assert_eq!(states(&f.c, f.tenant, "done").await, 3);
    assert_eq!(states(&f.c, f.tenant, "approved").await, 2);
    // The oldest three went first.
    let sent: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| m.rcpt_to[0].clone())
        .collect();
    assert_eq!(
        sent,
        vec![
            "c0@lender.example",
            "c1@lender.example",
            "c2@lender.example"
        ]
    );
    assert_eq!(
        count(&f.c, "SELECT count(*) FROM agent_policy_violations WHERE violation_type = 'rate_limit' AND action_type = 'send_email'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_in_different_time_zones_together_send_exactly_the_limit() {
    let f = fixture(json!({"max_emails_per_hour": 3})).await;
    let smtp = SmtpServer::start().await;
    for i in 0..10 {
        approved_card(
            &f.c,
            f.tenant,
            f.client,
            None,
            &format!("c{i}@lender.example"),
            20 - i,
        )
        .await;
    }
    let mailer = mailer_for(&smtp.url());
    let mut handles = Vec::new();
    for tz in ["UTC", "Asia/Kolkata"] {
        let mut c = f.db.client().await;
        c.batch_execute(&format!("SET TimeZone = '{tz}'"))
            .await
            .unwrap();
        let (tenant, settings, mailer) = (f.tenant, f.settings.clone(), mailer.clone());
        handles.push(tokio::spawn(async move {
            send_approved(
                &mut c,
                tenant,
                None,
                None,
                &settings,
                Some(&mailer),
                50,
                now(),
            )
            .await
            .unwrap()
        }));
    }
    let mut sent = 0;
    for h in handles {
        sent += h.await.unwrap().sent;
    }

    assert_eq!(smtp.messages().len(), 3);
    assert_eq!(sent, 3);
    assert_eq!(states(&f.c, f.tenant, "done").await, 3);
    assert_eq!(states(&f.c, f.tenant, "approved").await, 7);
    let windows =
        f.c.query(
            "SELECT window_start, action_count FROM agent_rate_limits WHERE tenant_id = $1",
            &[&f.tenant],
        )
        .await
        .unwrap();
    assert_eq!(
        windows.len(),
        1,
        "one UTC-hour window, whatever the session time zone"
    );
    assert_eq!(
        windows[0].get::<_, DateTime<Utc>>(0),
        Utc.with_ymd_and_hms(2025, 6, 2, 14, 0, 0).unwrap()
    );
    assert_eq!(windows[0].get::<_, i32>(1), 3);
    // Each message went to a different card's recipient.
    let mut rcpts: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| m.rcpt_to[0].clone())
        .collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(rcpts.len(), 3);
}

#[tokio::test]
async fn suppressed_address_in_another_letter_case_is_blocked_and_not_sent() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    f.c.execute(
        "INSERT INTO email_suppressions (tenant_id, email, reason) VALUES ($1, 'pat@LENDER.example', 'unsubscribe')",
        &[&f.tenant],
    )
    .await
    .unwrap();
    let card = approved_card(&f.c, f.tenant, f.client, None, "Pat@Lender.Example", 1).await;

    let report = send(&mut f, Some(&mailer_for(&smtp.url()))).await;

    assert!(smtp.messages().is_empty());
    assert_eq!(smtp.connections(), 0);
    assert_eq!(report.blocked, 1);
    assert_eq!(card_state(&f.c, card).await, "blocked");
    assert_eq!(
        count(
            &f.c,
            "SELECT count(*) FROM agent_policy_violations WHERE violation_type = 'suppression'"
        )
        .await,
        1
    );
    let reason: Option<String> =
        f.c.query_one(
            "SELECT blocked_reason FROM kanban_cards WHERE id = $1",
            &[&card],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.unwrap().contains("suppressed"));
    // A blocked send used no quota.
    assert_eq!(
        count(
            &f.c,
            "SELECT coalesce(sum(action_count), 0)::bigint FROM agent_rate_limits"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn unreadable_suppression_list_blocks_the_send() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    let card = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;
    f.c.batch_execute("ALTER TABLE email_suppressions RENAME TO email_suppressions_x")
        .await
        .unwrap();

    let report = send(&mut f, Some(&mailer_for(&smtp.url()))).await;

    assert!(smtp.messages().is_empty());
    assert_eq!(report.blocked, 1);
    assert_eq!(card_state(&f.c, card).await, "blocked");
    let reason: String =
        f.c.query_one(
            "SELECT reason FROM agent_policy_violations WHERE violation_type = 'suppression'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("fail closed"), "{reason}");
}

#[tokio::test]
async fn five_failures_in_fifteen_minutes_stop_sending_and_raise_one_critical_alert() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    smtp.set_behaviour(Behaviour::RejectRcpt(
        "421 4.7.0 Too many connections, slow down".into(),
    ));
    for i in 0..7 {
        approved_card(
            &f.c,
            f.tenant,
            f.client,
            None,
            &format!("c{i}@lender.example"),
            10 - i,
        )
        .await;
    }
    let mailer = mailer_for(&smtp.url());

    let first = send(&mut f, Some(&mailer)).await;

    assert!(first.circuit_open);
    assert_eq!((first.attempted, first.failed, first.sent), (5, 5, 0));
    assert_eq!(smtp.connections(), 5);
    assert_eq!(
        states(&f.c, f.tenant, "approved").await,
        7,
        "transient failures leave the cards approved"
    );
    assert_eq!(
        count(&f.c, "SELECT count(*) FROM email_provider_failures").await,
        5
    );

    let second = send(&mut f, Some(&mailer)).await;

    assert!(second.circuit_open);
    assert_eq!(second.attempted, 0);
    assert_eq!(smtp.connections(), 5, "an open circuit makes no connection");
    assert_eq!(
        count(&f.c, "SELECT count(*) FROM email_provider_failures").await,
        5
    );
    let alerts = f
        .c
        .query("SELECT severity, occurrences FROM agent_alerts WHERE alert_type = 'email_provider_failure'", &[])
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].get::<_, String>(0), "critical");
    assert_eq!(alerts[0].get::<_, i32>(1), 2);
    assert_eq!(
        autopilot::email::provider_failures_last_hour(&f.c, f.tenant, now())
            .await
            .unwrap(),
        5
    );

    // Sixteen minutes later the window has passed: sending is tried again.
    smtp.set_behaviour(Behaviour::Accept);
    let later = send_approved(
        &mut f.c,
        f.tenant,
        None,
        None,
        &f.settings,
        Some(&mailer),
        50,
        now() + Duration::minutes(16),
    )
    .await
    .unwrap();
    assert!(!later.circuit_open);
    assert_eq!(later.sent, 7);
}

#[tokio::test]
async fn provider_failures_are_classified() {
    let f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let plain = mailer_for(&smtp.url());
    let with_login = mailer_for(&format!(
        "smtp://agent:s3cret-pass@127.0.0.1:{}",
        smtp.addr.port()
    ));
    let refused = mailer_for(&format!("smtp://127.0.0.1:{closed}"));
    let cases: Vec<(Behaviour, &Mailer, &str, Option<i32>, &str)> = vec![
        (
            Behaviour::RejectRcpt("421 4.7.0 Too many connections, slow down".into()),
            &plain,
            "rate_limit",
            Some(421),
            "approved",
        ),
        (
            Behaviour::RejectRcpt("450 4.2.1 Mailbox busy".into()),
            &plain,
            "4xx",
            Some(450),
            "approved",
        ),
        (
            Behaviour::RejectAuth("535 5.7.8 Authentication credentials invalid".into()),
            &with_login,
            "auth",
            Some(535),
            "approved",
        ),
        (
            Behaviour::RejectData("554 5.7.1 Message rejected as spam".into()),
            &plain,
            "5xx",
            Some(554),
            "blocked",
        ),
        (Behaviour::Hang, &plain, "timeout", None, "approved"),
        (Behaviour::Accept, &refused, "connection", None, "approved"),
    ];
    let settings = TenantSettings::default();
    for (behaviour, mailer, error_type, code, state) in cases {
        let mut c = f.db.client().await;
        let tenant = tenant(&c, error_type, true).await;
        let client = client_row(&c, tenant, "L").await;
        let card = approved_card(&c, tenant, client, None, "pat@lender.example", 1).await;
        smtp.set_behaviour(behaviour.clone());

        let report = send_approved(
            &mut c,
            tenant,
            None,
            None,
            &settings,
            Some(mailer),
            50,
            now(),
        )
        .await
        .unwrap();

        assert_eq!((report.attempted, report.failed), (1, 1), "{behaviour:?}");
        let row = c
            .query_one(
                "SELECT error_type, smtp_code, card_id, provider, error_message FROM email_provider_failures WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), error_type, "{behaviour:?}");
        assert_eq!(row.get::<_, Option<i32>>(1), code, "{behaviour:?}");
        assert_eq!(row.get::<_, Option<Uuid>>(2), Some(card));
        assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("smtp"));
        assert!(!row.get::<_, String>(4).contains("s3cret-pass"));
        assert_eq!(card_state(&c, card).await, state, "{behaviour:?}");
    }
    assert!(smtp.messages().is_empty());
    // A 5xx that is not about the recipient suppresses nobody.
    assert_eq!(
        count(&f.c, "SELECT count(*) FROM email_suppressions").await,
        0
    );
}

#[tokio::test]
async fn unknown_recipient_is_suppressed_as_a_bounce_and_never_tried_again() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    smtp.set_behaviour(Behaviour::RejectRcpt(
        "550 5.1.1 <Gone@Lender.example>: no such user".into(),
    ));
    let card = approved_card(&f.c, f.tenant, f.client, None, "Gone@Lender.example", 2).await;
    let mailer = mailer_for(&smtp.url());

    let report = send(&mut f, Some(&mailer)).await;

    assert_eq!(report.failed, 1);
    assert_eq!(card_state(&f.c, card).await, "blocked");
    let rows =
        f.c.query(
            "SELECT lower(email), reason FROM email_suppressions WHERE tenant_id = $1",
            &[&f.tenant],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "gone@lender.example");
    assert_eq!(rows[0].get::<_, String>(1), "bounce");
    let (error_type, code): (String, Option<i32>) = {
        let r =
            f.c.query_one(
                "SELECT error_type, smtp_code FROM email_provider_failures",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((error_type.as_str(), code), ("5xx", Some(550)));

    // A new card to the same address (other case) is blocked before any connection.
    smtp.set_behaviour(Behaviour::Accept);
    let again = approved_card(&f.c, f.tenant, f.client, None, "gone@lender.EXAMPLE", 1).await;
    let connections = smtp.connections();
    let report = send(&mut f, Some(&mailer)).await;
    assert_eq!(report.blocked, 1);
    assert_eq!(card_state(&f.c, again).await, "blocked");
    assert_eq!(smtp.connections(), connections);
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn card_found_executing_is_parked_for_a_human_and_not_resent() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    let stuck = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 90).await;
    let in_flight = approved_card(&f.c, f.tenant, f.client, None, "kim@lender.example", 1).await;
    f.c.execute(
        "UPDATE kanban_cards SET state = 'executing', message_id = '<card-' || id || '@amc.example>', updated_at = $2 WHERE id = $1",
        &[&stuck, &(now() - Duration::hours(1))],
    )
    .await
    .unwrap();
    // Claimed a moment ago by another sender that is still talking to the server.
    f.c.execute(
        "UPDATE kanban_cards SET state = 'executing', updated_at = $2 WHERE id = $1",
        &[&in_flight, &now()],
    )
    .await
    .unwrap();

    let report = send(&mut f, Some(&mailer_for(&smtp.url()))).await;

    assert_eq!(report.recovered_stuck, 1);
    assert_eq!(report.attempted, 0);
    assert!(smtp.messages().is_empty());
    assert_eq!(smtp.connections(), 0);
    let row =
        f.c.query_one(
            "SELECT state, blocked_reason FROM kanban_cards WHERE id = $1",
            &[&stuck],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "blocked");
    let reason: String = row.get(1);
    assert!(reason.contains("interrupted send"), "{reason}");
    assert!(
        reason.contains(&format!("<card-{stuck}@amc.example>")),
        "{reason}"
    );
    assert_eq!(card_state(&f.c, in_flight).await, "executing");
}

#[tokio::test]
async fn without_smtp_settings_cards_stay_approved_and_the_provider_is_missing() {
    let mut f = fixture(json!({})).await;
    let card = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;
    let none = MailerConfig::from_vars(|_| None).unwrap();
    assert!(none.is_none());

    let report = send(&mut f, None).await;

    assert!(report.provider_missing);
    assert_eq!(report.attempted, 0);
    assert_eq!(card_state(&f.c, card).await, "approved");
    assert_eq!(
        count(&f.c, "SELECT count(*) FROM agent_rate_limits").await,
        0
    );
    assert_eq!(
        count(&f.c, "SELECT count(*) FROM agent_policy_violations").await,
        0
    );
}

#[tokio::test]
async fn list_unsubscribe_and_html_alternative_reach_the_server() {
    let mut f = fixture(json!({
        "unsubscribe_url": "https://amc.example/unsubscribe?t=abc",
        "unsubscribe_mailto": "unsubscribe@amc.example"
    }))
    .await;
    let smtp = SmtpServer::start().await;
    let card = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;
    f.c.execute(
        "UPDATE kanban_cards SET action_payload = jsonb_set(action_payload, '{body}', to_jsonb($2::text)) WHERE id = $1",
        &[&card, &"<html><body><p>Hello Pat,</p><p>Our <b>turn times</b> improved.</p></body></html>"],
    )
    .await
    .unwrap();

    let report = send(&mut f, Some(&mailer_for(&smtp.url()))).await;

    assert_eq!(report.sent, 1);
    let m = &smtp.messages()[0];
    assert_eq!(
        m.header("List-Unsubscribe").as_deref(),
        Some("<https://amc.example/unsubscribe?t=abc>, <mailto:unsubscribe@amc.example>")
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        m.data
    );
    assert!(
        m.data.contains("Content-Type: text/plain; charset=utf-8"),
        "{}",
        m.data
    );
    assert!(
        m.data.contains("Content-Type: text/html; charset=utf-8"),
        "{}",
        m.data
    );
    assert!(m.data.contains("Our turn times improved."), "{}", m.data);
}

#[tokio::test]
async fn lost_lease_stops_before_anything_is_sent() {
    let mut f = fixture(json!({})).await;
    let smtp = SmtpServer::start().await;
    let card = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;
    let fence = autopilot::db::Fence {
        tenant_id: f.tenant,
        run_id: Uuid::new_v4(),
    };
    let mailer = mailer_for(&smtp.url());

    let err = send_approved(
        &mut f.c,
        f.tenant,
        None,
        Some(&fence),
        &f.settings,
        Some(&mailer),
        50,
        now(),
    )
    .await
    .unwrap_err();

    assert!(autopilot::db::is_lease_lost_err(&err), "{err:#}");
    assert!(smtp.messages().is_empty());
    assert_eq!(card_state(&f.c, card).await, "approved");
}

fn mailer_with(url: &str, extra: &[(&str, String)]) -> Mailer {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let url = url.to_string();
    let cfg = MailerConfig::from_vars(move |k| match k {
        "SMTP_URL" => Some(url.clone()),
        "EMAIL_FROM" => Some(FROM.to_string()),
        "SMTP_TIMEOUT_SECS" => Some("2".to_string()),
        _ => extra
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone()),
    })
    .unwrap()
    .unwrap();
    Mailer::new(cfg).unwrap()
}

/// The CA made for the test, and the directory holding it.
fn pki() -> (tempfile::TempDir, smtp::TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = smtp::TestPki::new(dir.path());
    (dir, pki)
}

#[tokio::test]
async fn a_relay_with_a_private_ca_is_trusted_through_smtp_ca_file_with_implicit_tls_and_starttls()
{
    let mut f = fixture(json!({})).await;
    let (_dir, pki) = pki();
    for mode in [smtp::TlsMode::Implicit, smtp::TlsMode::StartTls] {
        let server = SmtpServer::start_tls(mode, &pki).await;
        // With a login, so AUTH runs inside TLS.
        let url = server.url().replacen("://", "://agent:s3cret-pass@", 1);
        let mailer = mailer_with(&url, &[("SMTP_CA_FILE", pki.ca_pem.display().to_string())]);
        let card = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;

        let report = send(&mut f, Some(&mailer)).await;

        assert_eq!((report.sent, report.failed), (1, 0), "{mode:?}");
        assert_eq!(card_state(&f.c, card).await, "done");
        let m = &server.messages()[0];
        assert!(m.tls, "{mode:?}: the message went over TLS");
    }
}

#[tokio::test]
async fn ssl_cert_file_names_the_trusted_bundle_for_the_relay() {
    let mut f = fixture(json!({})).await;
    let (_dir, pki) = pki();
    let server = SmtpServer::start_tls(smtp::TlsMode::Implicit, &pki).await;
    let mailer = mailer_with(
        &server.url(),
        &[("SSL_CERT_FILE", pki.ca_pem.display().to_string())],
    );
    let trust = mailer.trust_sources().unwrap();
    assert_eq!(trust.system_bundle.as_deref(), Some(pki.ca_pem.as_path()));
    approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;

    let report = send(&mut f, Some(&mailer)).await;

    assert_eq!(report.sent, 1);
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_relay_whose_certificate_is_not_trusted_is_refused_as_a_connection_failure() {
    let mut f = fixture(json!({})).await;
    let (_dir, pki) = pki();
    for mode in [smtp::TlsMode::Implicit, smtp::TlsMode::StartTls] {
        let server = SmtpServer::start_tls(mode, &pki).await;
        // The system trust store does not know the test's CA.
        let mailer = mailer_for(&server.url());
        let card = approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 1).await;

        let report = send(&mut f, Some(&mailer)).await;

        assert_eq!((report.sent, report.failed), (0, 1), "{mode:?}");
        assert!(server.messages().is_empty());
        assert_eq!(card_state(&f.c, card).await, "approved", "retried later");
        let (error_type, message): (String, String) = {
            let r = f
                .c
                .query_one(
                    "SELECT error_type, error_message FROM email_provider_failures WHERE card_id = $1",
                    &[&card],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(error_type, "connection");
        assert!(
            message.starts_with(&format!("TLS handshake with {} failed: ", server.addr))
                && message.contains("UnknownIssuer"),
            "{message}"
        );
        f.c.execute("DELETE FROM kanban_cards WHERE id = $1", &[&card])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_ehlo_name_is_the_sender_domain_unless_smtp_helo_name_is_set() {
    let mut f = fixture(json!({})).await;
    let server = SmtpServer::start().await;
    approved_card(&f.c, f.tenant, f.client, None, "pat@lender.example", 2).await;
    send(&mut f, Some(&mailer_for(&server.url()))).await;
    approved_card(&f.c, f.tenant, f.client, None, "kim@lender.example", 1).await;
    let named = mailer_with(
        &server.url(),
        &[("SMTP_HELO_NAME", "agent-1.mail.amc.example".to_string())],
    );
    send(&mut f, Some(&named)).await;

    let helos: Vec<String> = server.messages().iter().map(|m| m.helo.clone()).collect();
    assert_eq!(helos, vec!["amc.example", "agent-1.mail.amc.example"]);
}

/// Structural MIME check of one message: the top-level headers appear once each,
/// `MIME-Version: 1.0`, CRLF line ends, and for multipart every part typed and encoded.
fn assert_well_formed_mime(m: &smtp::Received) -> String {
    assert!(
        !m.data.replace("\r\n", "").contains('\n'),
        "bare LF in {}",
        m.data
    );
    for name in [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ] {
        assert_eq!(m.headers(name).len(), 1, "{name} once in {}", m.data);
    }
    assert_eq!(m.header("MIME-Version").as_deref(), Some("1.0"));
    let content_type = m.header("Content-Type").unwrap();
    if let Some(rest) = content_type.strip_prefix("multipart/alternative;") {
        let boundary = rest
            .trim()
            .strip_prefix("boundary=")
            .unwrap()
            .trim_matches('"')
            .to_string();
        let body = m.data.split_once("\r\n\r\n").unwrap().1;
        let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
        assert!(
            parts.last().unwrap().starts_with("--"),
            "closing delimiter: {body}"
        );
        let types: Vec<String> = parts[1..parts.len() - 1]
            .iter()
            .map(|p| {
                let head = p
                    .trim_start_matches("\r\n")
                    .split("\r\n\r\n")
                    .next()
                    .unwrap();
                let headers = smtp::header_lines(head);
                let get = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| v.clone())
                };
                assert!(get("Content-Transfer-Encoding").is_some(), "{p}");
                get("Content-Type").unwrap()
            })
            .collect();
        assert_eq!(
            types,
            vec!["text/plain; charset=utf-8", "text/html; charset=utf-8"]
        );
    } else {
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert_eq!(m.headers("Content-Transfer-Encoding").len(), 1);
    }
    content_type
}

#[tokio::test]
async fn every_message_shape_is_well_formed_mime_with_list_id_beside_list_unsubscribe() {
    let mut f = fixture(json!({})).await;
    let server = SmtpServer::start().await;
    let mailer = mailer_for(&server.url());
    let plain = approved_card(&f.c, f.tenant, f.client, None, "a@lender.example", 3).await;
    send(&mut f, Some(&mailer)).await;
    let html = approved_card(&f.c, f.tenant, f.client, None, "b@lender.example", 2).await;
    f.c.execute(
        "UPDATE kanban_cards SET action_payload = jsonb_set(action_payload, '{body}', to_jsonb($2::text)) WHERE id = $1",
        &[&html, &"<p>Hello,</p><p>our <b>rates</b> changed.</p>"],
    )
    .await
    .unwrap();
    send(&mut f, Some(&mailer)).await;
    let listed = approved_card(&f.c, f.tenant, f.client, None, "c@lender.example", 1).await;
    let with_unsubscribe = TenantSettings::parse(&json!({
        "unsubscribe_url": "https://amc.example/u?t=1",
        "unsubscribe_mailto": "unsubscribe@amc.example"
    }))
    .unwrap();
    send_approved(
        &mut f.c,
        f.tenant,
        None,
        None,
        &with_unsubscribe,
        Some(&mailer),
        50,
        now(),
    )
    .await
    .unwrap();

    let messages = server.messages();
    assert_eq!(messages.len(), 3);
    let by_card = |card: Uuid| {
        messages
            .iter()
            .find(|m| m.header("Message-ID") == Some(format!("<card-{card}@amc.example>")))
            .unwrap()
    };
    assert_eq!(
        assert_well_formed_mime(by_card(plain)),
        "text/plain; charset=utf-8"
    );
    assert!(assert_well_formed_mime(by_card(html)).starts_with("multipart/alternative"));
    let m = by_card(listed);
    assert_well_formed_mime(m);
    assert_eq!(
        m.headers("List-Id"),
        vec![format!("<followups.{}.amc.example>", f.tenant)]
    );
    assert_eq!(m.headers("List-Unsubscribe").len(), 1);
    for other in [plain, html] {
        assert!(by_card(other).headers("List-Id").is_empty());
    }
}

#[tokio::test]
async fn failure_texts_name_the_problem_once_without_a_repeated_prefix() {
    let f = fixture(json!({})).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = SmtpServer::start().await;
    server.set_behaviour(Behaviour::CloseAfterData);
    let cases = [
        (
            format!("smtp://127.0.0.1:{closed}"),
            format!("connecting to 127.0.0.1:{closed} failed: "),
        ),
        (
            server.url(),
            format!(
                "{} closed the connection after the end of the message without answering; the message may have been delivered",
                server.addr
            ),
        ),
    ];
    for (url, expected) in cases {
        let mut c = f.db.client().await;
        let t = tenant(&c, "T", true).await;
        let cl = client_row(&c, t, "L").await;
        approved_card(&c, t, cl, None, "pat@lender.example", 1).await;
        send_approved(
            &mut c,
            t,
            None,
            None,
            &TenantSettings::default(),
            Some(&mailer_for(&url)),
            50,
            now(),
        )
        .await
        .unwrap();
        let (error_type, message): (String, String) = {
            let r = c
                .query_one(
                    "SELECT error_type, error_message FROM email_provider_failures WHERE tenant_id = $1",
                    &[&t],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(error_type, "connection", "{message}");
        assert!(message.starts_with(&expected), "{message}");
        let segments: Vec<&str> = message.split(": ").collect();
        let mut unique = segments.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), segments.len(), "a repeated part in {message}");
    }
}

#[tokio::test]
async fn checking_the_relay_authenticates_and_sends_nothing() {
    let (_dir, pki) = pki();
    let server = SmtpServer::start_tls(smtp::TlsMode::StartTls, &pki).await;
    let url = server.url().replacen("://", "://agent:s3cret-pass@", 1);
    let mailer = mailer_with(&url, &[("SMTP_CA_FILE", pki.ca_pem.display().to_string())]);

    mailer.check().await.unwrap();
    server.set_behaviour(Behaviour::RejectAuth(
        "535 5.7.8 Authentication credentials invalid".into(),
    ));
    let failure = mailer.check().await.unwrap_err();

    assert_eq!(failure.error_type.as_str(), "auth");
    assert!(
        !failure.message.contains("s3cret-pass"),
        "{}",
        failure.message
    );
    assert_eq!(server.connections(), 2);
    assert!(server.messages().is_empty());
}
