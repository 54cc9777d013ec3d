//! The host's own inbox as a source, read by the cycle's React phase: where the host keeps
//! inbound mail (Salesmod: `gmail_messages` with `org_id`, `contact_id`, `from_email`,
//! `gmail_thread_id`, `received_at`) and bounce details (`email_suppressions.bounce_type`),
//! new rows get the same rules as `ingest-mail`. Only when the tables (and columns) exist,
//! found in the catalog; a cursor per tenant and source makes each row read once (and the
//! event's key makes a re-read harmless).
//!
//! A host inbox row carries no threading headers, so a message from an address the agent
//! e-mailed in the 30 days before it arrived counts as the reply to that e-mail (an
//! out-of-office subject excepted).

use anyhow::{Context as _, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::db::{Begin, Commit, Fence, Sql};
use crate::inbound::apply::{apply, CardRef, Effect};
use crate::inbound::classify::automatic_subject;
use crate::inbound::feedback;

const HOST_COLUMNS: &str = include_str!("../sql/inbound/host_columns.sql");
const CURSOR_GET: &str = include_str!("../sql/inbound/cursor_get.sql");
const CURSOR_SET: &str = include_str!("../sql/inbound/cursor_set.sql");
const HOST_CARD: &str = include_str!("../sql/inbound/host_card.sql");

/// Rows read per source and cycle; the rest wait for the next cycle.
pub const BATCH: i64 = 500;

/// What the React phase took from the host's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    pub inbox_rows: u64,
    pub replies: u64,
    pub bounce_rows: u64,
    pub alerts_opened: Vec<&'static str>,
}

async fn columns(c: &impl Sql, table: &str) -> Result<Vec<String>> {
    Ok(c.query(HOST_COLUMNS, &[&table])
        .await
        .with_context(|| format!("looking up {table} in the catalog"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

async fn cursor(c: &impl Sql, tenant: Uuid, source: &str) -> Result<(DateTime<Utc>, String)> {
    Ok(c.query_opt(CURSOR_GET, &[&tenant, &source])
        .await
        .context("reading the inbox cursor")?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_else(|| (epoch(), String::new())))
}

async fn set_cursor(
    c: &mut impl Begin,
    fence: &Fence,
    tenant: Uuid,
    source: &str,
    at: DateTime<Utc>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let tx = c.begin().await?;
    fence.check(&tx).await?;
    tx.execute(CURSOR_SET, &[&tenant, &source, &at, &id, &now])
        .await
        .context("advancing the inbox cursor")?;
    tx.commit().await?;
    Ok(())
}

async fn card_for(
    c: &impl Sql,
    tenant: Uuid,
    email: &str,
    contact: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<Option<CardRef>> {
    Ok(c.query_opt(HOST_CARD, &[&tenant, &email, &contact, &at])
        .await
        .context("matching a host row to a sent card")?
        .map(|r| CardRef {
            id: r.get(0),
            tenant_id: r.get(1),
            contact_id: r.get(2),
            client_id: r.get(3),
            email: r.get(4),
            subject: r.get(5),
        }))
}

/// New `gmail_messages` rows of the tenant: replies to the agent's e-mail.
async fn read_inbox(
    c: &mut impl Begin,
    tenant: Uuid,
    fence: &Fence,
    now: DateTime<Utc>,
    report: &mut HostReport,
) -> Result<()> {
    const SOURCE: &str = "gmail_messages";
    let cols = columns(&*c, "public.gmail_messages").await?;
    let has = |n: &str| cols.iter().any(|c| c == n);
    if !["id", "org_id", "from_email", "received_at"]
        .iter()
        .all(|n| has(n))
    {
        return Ok(());
    }
    let opt = |n: &str, cast: &str| {
        if has(n) {
            format!("m.{n}::{cast}")
        } else {
            format!("NULL::{cast}")
        }
    };
    let sql = format!(
        "SELECT m.id::text, lower(btrim(m.from_email::text)), m.received_at::timestamptz, {}, {}, {}
         FROM public.gmail_messages m
         WHERE m.org_id::text = $1 AND (m.received_at::timestamptz, m.id::text) > ($2, $3)
           AND m.received_at::timestamptz <= $4
         ORDER BY m.received_at::timestamptz, m.id::text
         LIMIT {BATCH}",
        opt("contact_id", "uuid"),
        opt("gmail_thread_id", "text"),
        opt("subject", "text"),
    );
    let (after_at, after_id) = cursor(&*c, tenant, SOURCE).await?;
    let rows = c
        .query(&sql, &[&tenant.to_string(), &after_at, &after_id, &now])
        .await
        .context("reading new rows of gmail_messages")?;
    let mut last = None;
    for r in &rows {
        let id: String = r.get(0);
        let from: Option<String> = r.get(1);
        let received_at: DateTime<Utc> = r.get(2);
        let contact: Option<Uuid> = r.get(3);
        let thread: Option<String> = r.get(4);
        let subject: Option<String> = r.get(5);
        last = Some((received_at, id.clone()));
        report.inbox_rows += 1;
        let Some(from) = from.filter(|f| f.contains('@')) else {
            continue;
        };
        let Some(card) = card_for(&*c, tenant, &from, contact, received_at).await? else {
            continue;
        };
        let effect = match subject.as_deref().and_then(automatic_subject) {
            Some(reason) => Effect::AutoReply { reason },
            None => Effect::Reply,
        };
        let details =
            json!({"from": from, "subject": subject, "gmail_thread_id": thread, "row_id": id});
        let out = apply(
            c,
            Some(fence),
            "host_inbox",
            &format!("{SOURCE}:{id}"),
            None,
            &card,
            &effect,
            details,
            received_at,
        )
        .await?;
        if out.result == "reply" {
            report.replies += 1;
        }
    }
    if let Some((at, id)) = last {
        set_cursor(c, fence, tenant, SOURCE, at, &id, now).await?;
    }
    Ok(())
}

/// New `email_suppressions` rows the host wrote with a `bounce_type`: counted as bounces of
/// the agent's last e-mail to the address (they already suppress it).
async fn read_host_bounces(
    c: &mut impl Begin,
    tenant: Uuid,
    fence: &Fence,
    now: DateTime<Utc>,
    report: &mut HostReport,
) -> Result<()> {
    const SOURCE: &str = "email_suppressions";
    let cols = columns(&*c, "public.email_suppressions").await?;
    if !cols.iter().any(|c| c == "bounce_type") {
        return Ok(());
    }
    let sql = format!(
        "SELECT s.id::text, lower(btrim(s.email)), s.created_at, s.contact_id, s.bounce_type::text
         FROM public.email_suppressions s
         WHERE s.tenant_id = $1 AND s.bounce_type IS NOT NULL AND s.email IS NOT NULL
           AND (s.created_at, s.id::text) > ($2, $3) AND s.created_at <= $4
         ORDER BY s.created_at, s.id::text
         LIMIT {BATCH}"
    );
    let (after_at, after_id) = cursor(&*c, tenant, SOURCE).await?;
    let rows = c
        .query(&sql, &[&tenant, &after_at, &after_id, &now])
        .await
        .context("reading new bounce rows of email_suppressions")?;
    let mut last = None;
    for r in &rows {
        let id: String = r.get(0);
        let email: String = r.get(1);
        let at: DateTime<Utc> = r.get(2);
        let contact: Option<Uuid> = r.get(3);
        let bounce_type: String = r.get(4);
        last = Some((at, id.clone()));
        report.bounce_rows += 1;
        let Some(card) = card_for(&*c, tenant, &email, contact, at).await? else {
            continue;
        };
        let t = bounce_type.to_ascii_lowercase();
        let effect = if ["soft", "transient", "temporary", "deferred"]
            .iter()
            .any(|w| t.contains(w))
        {
            Effect::SoftBounce {
                status: bounce_type,
            }
        } else {
            Effect::Bounce {
                status: bounce_type,
            }
        };
        apply(
            c,
            Some(fence),
            "host_suppression",
            &format!("{SOURCE}:{id}"),
            None,
            &card,
            &effect,
            json!({"row_id": id}),
            at,
        )
        .await?;
    }
    if let Some((at, id)) = last {
        set_cursor(c, fence, tenant, SOURCE, at, &id, now).await?;
    }
    Ok(())
}

fn tolerate(result: Result<()>, source: &str, insights: &mut Vec<String>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if crate::db::is_lease_lost_err(&e) || crate::error::exit_code_for(&e) == 75 => {
            Err(e)
        }
        Err(e) => {
            let text = crate::error::redact(&format!("{e:#}"));
            tracing::warn!(source, error = %text, "host inbox source skipped");
            insights.push(format!(
                "host inbox source {source} could not be read: {text}"
            ));
            Ok(())
        }
    }
}

/// The React phase's inbound mail step: read the host's inbox and bounce rows when they
/// exist, then raise the rate alerts. Lines for the reflection go to `changes`/`insights`.
pub async fn react(
    c: &mut impl Begin,
    tenant: Uuid,
    fence: Fence,
    now: DateTime<Utc>,
    changes: &mut Vec<String>,
    insights: &mut Vec<String>,
) -> Result<HostReport> {
    let mut report = HostReport::default();
    // The host's tables are the host's: one whose rows cannot be read as expected (a column
    // of another type, a value that does not cast) is named in the reflection and skipped,
    // not a reason to fail the tenant's cycle. A lost lease or connection still ends it.
    let inbox = read_inbox(c, tenant, &fence, now, &mut report).await;
    tolerate(inbox, "gmail_messages", insights)?;
    let bounces = read_host_bounces(c, tenant, &fence, now, &mut report).await;
    tolerate(bounces, "email_suppressions.bounce_type", insights)?;
    {
        let tx = c.begin().await?;
        fence.check(&tx).await?;
        report.alerts_opened = feedback::evaluate_alerts(&tx, tenant, now).await?;
        tx.commit().await?;
    }
    if report.replies > 0 {
        changes.push(format!(
            "{} reply(ies) found in the host's inbox: automatic e-mail to those contacts is held for a person",
            report.replies
        ));
    }
    if let Some(f) = feedback::for_tenants(&*c, &[tenant], now)
        .await?
        .into_iter()
        .next()
    {
        if f.rates.sends > 0 {
            insights.push(format!(
                "last {} sends: reply rate {:.1} %, bounce rate {:.1} %, complaint rate {:.2} %",
                f.rates.sends,
                f.rates.reply_rate * 100.0,
                f.rates.bounce_rate * 100.0,
                f.rates.complaint_rate * 100.0
            ));
        }
        if let Some(why) = f.sending_paused {
            insights.push(format!("e-mail sending paused: {why}"));
        }
    }
    Ok(report)
}
