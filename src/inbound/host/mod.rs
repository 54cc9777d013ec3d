//! The host's own inbox as a source: where the host keeps inbound mail (Salesmod:
//! `gmail_messages`) and bounce details (`email_suppressions.bounce_type`,
//! `email_notifications`), new rows get the same rules as `ingest-mail`. Only when the tables
//! (and columns) exist, found in the catalog; a cursor per tenant and source makes each row
//! read once (and the event's key makes a re-read harmless).
//!
//! The cycle reads them first ([`read_sources`]), before Plan drafts and Act sends, so a
//! reply found there holds the contact's approved cards in the same cycle; the React phase
//! ([`react`]) then raises the rate alerts and writes the rates into the reflection.
//!
//! A host inbox row carries no threading headers, so a message from an address the agent
//! e-mailed in the 30 days before it arrived counts as the reply to that e-mail (an
//! out-of-office subject excepted).

use anyhow::{Context as _, Result};
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::db::{Begin, Fence, Sql};
use crate::inbound::apply::CardRef;
use crate::inbound::feedback;

mod sources;

const HOST_COLUMNS: &str = crate::sql!("inbound/host_columns");
const CURSOR_GET: &str = crate::sql!("inbound/cursor_get");
const CURSOR_SET: &str = crate::sql!("inbound/cursor_set");
const HOST_CARD: &str = crate::sql!("inbound/host_card");

/// Rows read per source and cycle; the rest wait for the next cycle.
pub const BATCH: i64 = 500;

/// What the React phase took from the host's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// New rows read from every host source.
    pub rows: u64,
    pub replies: u64,
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
    let tx = fence.begin(c).await?;
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

/// A source's outcome: a host table whose rows cannot be read as expected (a column of
/// another type, a value that does not cast) is named in the reflection and skipped, not a
/// reason to fail the tenant's cycle. A lost lease or connection still ends it.
fn tolerate<T>(result: Result<T>, source: &str, insights: &mut Vec<String>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if crate::db::is_lease_lost_err(&e) || crate::error::exit_code_for(&e) == 75 => {
            Err(e)
        }
        Err(e) => {
            let text = crate::error::redact(&format!("{e:#}"));
            tracing::warn!(source, error = %text, "host inbox source skipped");
            insights.push(format!(
                "host inbox source {source} could not be read: {text}"
            ));
            Ok(None)
        }
    }
}

/// The cycle's first step: read the host's inbox and bounce rows when they exist, then
/// raise the rate alerts, so a reply holds its contact and a pause stops sending before
/// this cycle's Plan and Act. Lines for the reflection go to `changes`/`insights`.
pub async fn read_sources(
    c: &mut impl Begin,
    tenant: Uuid,
    fence: Fence,
    now: DateTime<Utc>,
    changes: &mut Vec<String>,
    insights: &mut Vec<String>,
) -> Result<HostReport> {
    let mut report = HostReport::default();
    sources::read_all(c, tenant, &fence, now, &mut report, insights).await?;
    let tx = fence.begin(c).await?;
    feedback::evaluate_alerts(&tx, tenant, now).await?;
    tx.commit().await?;
    if report.replies > 0 {
        changes.push(format!(
            "{} reply(ies) found in the host's inbox: automatic e-mail to those contacts is held for a person",
            report.replies
        ));
    }
    Ok(report)
}

/// The React phase's inbound mail step: the tenant's reply, bounce and complaint rates
/// over its last sends, and a sending pause, for the reflection.
pub async fn react(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
    insights: &mut Vec<String>,
) -> Result<()> {
    let Some(f) = feedback::for_tenants(c, &[tenant], now)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
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
    Ok(())
}
