//! The host tables read as inbound mail, each with the same loop: new rows after the
//! tenant's cursor, matched to the agent's last e-mail to the address, turned into the
//! effect `ingest-mail` would give them, then the cursor advanced.
//!
//! - `gmail_messages` (Salesmod's Gmail sync): a message from an address the agent e-mailed
//!   is a reply (an out-of-office subject is an automatic answer).
//! - `email_suppressions` rows with a `bounce_type`: the host's own bounce processing.
//! - `email_notifications` (Salesmod's delivery notices): `bounce_hard` and `bounce_soft`.
//!
//! Salesmod's `org_id` references the owning profile, not the tenant: a table without
//! `tenant_id` is scoped by the tenant's own ids (its owner, its profiles); a table with
//! neither column is never read, so one tenant's cycle can never see another's mail.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{card_for, columns, cursor, set_cursor, HostReport, BATCH};
use crate::db::{Begin, Fence, Sql};
use crate::inbound::apply::{apply, Effect};
use crate::inbound::classify::automatic_subject;

const TENANT_ORGS: &str = crate::sql!("inbound/tenant_orgs");

/// One new host row, in the shape every source selects: id, address, when, contact and
/// two source-specific texts.
struct HostRow {
    id: String,
    email: Option<String>,
    at: DateTime<Utc>,
    contact: Option<Uuid>,
    kind: Option<String>,
    text: Option<String>,
}

/// What a source makes of its row, or `None` to leave it alone.
type Classify = fn(&HostRow) -> Option<(Effect, Value)>;

/// Whether the host's table has a column.
type Has<'a> = &'a dyn Fn(&str) -> bool;

/// The source's select list for the columns the host has, or `None` when it lacks one it needs.
type Select = fn(Has) -> Option<String>;

struct Source {
    /// The table, also the cursor's name.
    table: &'static str,
    /// The event source recorded by `apply`.
    origin: &'static str,
    /// The row's time column: the cursor's order and the `now` bound.
    at: &'static str,
    /// Column expressions for kind and text (`NULL::text` when the host lacks them).
    select: Select,
    classify: Classify,
}

fn opt(has: Has, col: &str, cast: &str) -> String {
    if has(col) {
        format!("x.{col}::{cast}")
    } else {
        format!("NULL::{cast}")
    }
}

const INBOX: Source = Source {
    table: "gmail_messages",
    origin: "host_inbox",
    at: "received_at",
    select: |has| {
        ["id", "from_email", "received_at"].iter().all(|c| has(c)).then(|| {
            format!(
                "x.id::text, lower(btrim(x.from_email::text)), x.received_at::timestamptz, {}, {}, {}",
                opt(has, "contact_id", "uuid"),
                opt(has, "gmail_thread_id", "text"),
                opt(has, "subject", "text")
            )
        })
    },
    classify: |r| {
        let effect = match r.text.as_deref().and_then(automatic_subject) {
            Some(reason) => Effect::AutoReply { reason },
            None => Effect::Reply,
        };
        let details =
            json!({"from": r.email, "subject": r.text, "gmail_thread_id": r.kind, "row_id": r.id});
        Some((effect, details))
    },
};

const SUPPRESSIONS: Source = Source {
    table: "email_suppressions",
    origin: "host_suppression",
    at: "created_at",
    select: |has| {
        ["id", "email", "created_at", "bounce_type"].iter().all(|c| has(c)).then(|| {
            format!(
                "x.id::text, lower(btrim(x.email::text)), x.created_at::timestamptz, {}, x.bounce_type::text, NULL::text",
                opt(has, "contact_id", "uuid")
            )
        })
    },
    classify: |r| {
        let status = r.kind.clone()?;
        let t = status.to_ascii_lowercase();
        let soft = ["soft", "transient", "temporary", "deferred"]
            .iter()
            .any(|w| t.contains(w));
        let effect = if soft {
            Effect::SoftBounce { status }
        } else {
            Effect::Bounce { status }
        };
        Some((effect, json!({"row_id": r.id})))
    },
};

const NOTIFICATIONS: Source = Source {
    table: "email_notifications",
    origin: "host_notification",
    at: "created_at",
    select: |has| {
        ["id", "email", "created_at", "type"].iter().all(|c| has(c)).then(|| {
            format!(
                "x.id::text, lower(btrim(x.email::text)), x.created_at::timestamptz, {}, x.type::text, {}",
                opt(has, "contact_id", "uuid"),
                opt(has, "message", "text")
            )
        })
    },
    // Salesmod's types: `bounce_hard`, `bounce_soft`, `suppression` (the host suppressed
    // the address itself, read from email_suppressions) and `delivery_issue` (no verdict).
    classify: |r| {
        let status = r.kind.clone()?;
        let details = json!({"row_id": r.id, "message": r.text});
        match status.as_str() {
            "bounce_hard" => Some((Effect::Bounce { status }, details)),
            "bounce_soft" => Some((Effect::SoftBounce { status }, details)),
            _ => None,
        }
    },
};

/// Every source, in the order the cycle reads them.
const SOURCES: [Source; 3] = [INBOX, SUPPRESSIONS, NOTIFICATIONS];

/// The text ids a row's tenant column may hold for this tenant, and which column that is;
/// `None` when the table has no tenant column at all (then it is not read).
async fn scope(
    c: &impl Sql,
    tenant: Uuid,
    has: Has<'_>,
) -> Result<Option<(&'static str, Vec<String>)>> {
    if has("tenant_id") {
        return Ok(Some(("tenant_id", vec![tenant.to_string()])));
    }
    if !has("org_id") {
        return Ok(None);
    }
    let ids = c
        .query(TENANT_ORGS, &[&tenant])
        .await
        .context("looking up the tenant's owner and profiles")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(("org_id", ids)))
}

/// Read one source's new rows for the tenant and apply them; returns (rows, replies).
async fn drain(
    c: &mut impl Begin,
    tenant: Uuid,
    fence: &Fence,
    now: DateTime<Utc>,
    source: &Source,
) -> Result<(u64, u64)> {
    let table = format!("public.{}", source.table);
    let cols = columns(&*c, &table).await?;
    let has = |n: &str| cols.iter().any(|c| c == n);
    let (Some(select), Some((scope_col, ids))) =
        ((source.select)(&has), scope(&*c, tenant, &has).await?)
    else {
        return Ok((0, 0));
    };
    let at = format!("x.{}::timestamptz", source.at);
    let sql = format!(
        "SELECT {select} FROM {table} x
         WHERE x.{scope_col}::text = ANY($1::text[]) AND ({at}, x.id::text) > ($2, $3)
           AND {at} <= $4
         ORDER BY {at}, x.id::text
         LIMIT {BATCH}"
    );
    let (after_at, after_id) = cursor(&*c, tenant, source.table).await?;
    let rows = c
        .query(&sql, &[&ids, &after_at, &after_id, &now])
        .await
        .with_context(|| format!("reading new rows of {}", source.table))?;
    let (mut replies, mut last) = (0, None);
    for r in &rows {
        let row = HostRow {
            id: r.get(0),
            email: r.get(1),
            at: r.get(2),
            contact: r.get(3),
            kind: r.get(4),
            text: r.get(5),
        };
        last = Some((row.at, row.id.clone()));
        let Some(email) = row.email.as_deref().filter(|e| e.contains('@')) else {
            continue;
        };
        let Some((effect, details)) = (source.classify)(&row) else {
            continue;
        };
        let Some(card) = card_for(&*c, tenant, email, row.contact, row.at).await? else {
            continue;
        };
        let key = format!("{}:{}", source.table, row.id);
        let out = apply(
            c,
            Some(fence),
            source.origin,
            &key,
            None,
            &card,
            &effect,
            details,
            row.at,
        )
        .await?;
        replies += u64::from(out.result == "reply");
    }
    if let Some((at, id)) = last {
        set_cursor(c, fence, tenant, source.table, at, &id, now).await?;
    }
    Ok((rows.len() as u64, replies))
}

/// Read every host source that exists; one that cannot be read as expected is named in
/// `insights` and skipped (a lost lease or connection still ends the cycle).
pub(super) async fn read_all(
    c: &mut impl Begin,
    tenant: Uuid,
    fence: &Fence,
    now: DateTime<Utc>,
    report: &mut HostReport,
    insights: &mut Vec<String>,
) -> Result<()> {
    for source in &SOURCES {
        match super::tolerate(
            drain(c, tenant, fence, now, source).await,
            source.table,
            insights,
        )? {
            Some((rows, replies)) => {
                report.rows += rows;
                report.replies += replies;
            }
            None => continue,
        }
    }
    Ok(())
}
