//! Inbound mail: the React phase's input (SPEC "ingest-mail", issue 17). Owns
//! `autopilot ingest-mail` (one message on stdin, or a Maildir), `autopilot contact resume`,
//! the host's inbox as a source during the cycle ([`host`]), and the reply, bounce and
//! complaint rates with their alerts and the sending pause ([`feedback`]).
//!
//! A delivery status notification (RFC 3464) or a complaint (RFC 5965) about a message the
//! agent sent, matched by the Message-ID recorded on its card, suppresses the address; a
//! reply holds automatic e-mail to the contact until a person resumes it (the send path's
//! suppression check reads the holds), holds the cards approved before it, creates a card
//! for a person and restarts the contact's engagement clock. Automatic answers (RFC 3834)
//! are not replies. Each message is recorded once per tenant, so ingesting it again changes
//! nothing; input that is not a complete e-mail is refused before anything is written.

pub mod apply;
pub mod classify;
pub mod feedback;
pub mod host;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::Begin;
use crate::db::Sql;
use crate::error::AppError;
use crate::Context;
use apply::Outcome;

const RESUME: &str = crate::sql!("inbound/resume");
const CONTACT_TENANT: &str = crate::sql!("inbound/contact_tenant");
const PROFILE_TENANT: &str = crate::sql!("inbound/profile_tenant");

/// What one invocation of `ingest-mail` did (`--json`).
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    pub messages: Vec<Outcome>,
    pub total: usize,
    /// Messages that changed something (bounce, soft_bounce, complaint, reply).
    pub recognised: usize,
    pub auto_replies: usize,
    pub ignored: usize,
    pub duplicates: usize,
    pub malformed: usize,
}

impl IngestReport {
    fn push(&mut self, o: Outcome) {
        self.total += 1;
        match o.result.as_str() {
            "ignored" => self.ignored += 1,
            "duplicate" => self.duplicates += 1,
            "malformed" => self.malformed += 1,
            "auto_reply" => self.auto_replies += 1,
            _ => self.recognised += 1,
        }
        self.messages.push(o);
    }
}

/// Parse, match and apply one message's bytes.
pub async fn ingest_bytes(
    c: &mut impl Begin,
    raw: &[u8],
    max_bytes: usize,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let msg = match classify::classify(raw, max_bytes) {
        Ok(m) => m,
        Err(e) => return Ok(Outcome::malformed(e.0)),
    };
    apply::ingest(c, &msg, now).await
}

/// A bounce or complaint re-evaluates its tenant's rate alerts at once (once per tenant and
/// invocation), so a pause does not wait for the next cycle.
async fn evaluate_rate_alerts(
    c: &impl crate::db::Sql,
    report: &IngestReport,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tenants: Vec<Uuid> = report
        .messages
        .iter()
        .filter(|m| matches!(m.result.as_str(), "bounce" | "complaint"))
        .filter_map(|m| m.tenant_id)
        .collect();
    tenants.sort();
    tenants.dedup();
    for tenant in tenants {
        feedback::evaluate_alerts(c, tenant, now).await?;
    }
    Ok(())
}

/// What `ingest-mail` is asked to read.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Every new message of this Maildir; `None`: one message on stdin.
    pub maildir: Option<PathBuf>,
    /// A larger message is refused.
    pub max_size: usize,
    /// Print one JSON document.
    pub json: bool,
}

/// `contact resume CONTACT_ID`: who resumes and why.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    pub contact_id: Uuid,
    /// Profile that resumes it (must belong to the contact's tenant).
    pub by: Option<Uuid>,
    /// Recorded on the hold.
    pub note: Option<String>,
    /// Print one JSON document.
    pub json: bool,
}

pub async fn run_ingest(ctx: &Context, args: &IngestOptions) -> Result<u8> {
    let now = ctx.now();
    let report = match &args.maildir {
        None => {
            // Read one byte past the cap: enough to know the message is too large.
            let mut raw = Vec::new();
            std::io::stdin()
                .lock()
                .take(args.max_size as u64 + 1)
                .read_to_end(&mut raw)
                .context("reading the message from standard input")?;
            // Refused before connecting: bad input is exit 2 with nothing written.
            if let Err(e) = classify::classify(&raw, args.max_size) {
                return Err(AppError::usage(format!("ingest-mail: {e}")));
            }
            let pool = ctx.db.pool(1)?;
            let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
            let mut report = IngestReport::default();
            report.push(ingest_bytes(&mut *conn, &raw, args.max_size, now).await?);
            evaluate_rate_alerts(&*conn, &report, now).await?;
            report
        }
        Some(dir) => ingest_maildir(ctx, dir, args.max_size, now).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for m in &report.messages {
            let file = m
                .file
                .as_deref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default();
            println!("{file}{}: {}", m.result, m.reason);
        }
        if args.maildir.is_some() {
            println!(
                "{} message(s): {} recognised, {} automatic answer(s), {} ignored, {} duplicate(s), {} malformed",
                report.total, report.recognised, report.auto_replies, report.ignored, report.duplicates, report.malformed
            );
        }
    }
    for m in report.messages.iter().filter(|m| m.result == "ignored") {
        tracing::info!(file = ?m.file, message_id = ?m.message_id, reason = %m.reason, "inbound message left alone");
    }
    Ok(if report.malformed > 0 { 1 } else { 0 })
}

/// A Maildir file's name without its info part (`:2,FLAGS`), and its flags.
fn split_info(name: &str) -> (&str, &str) {
    match name.rsplit_once(":2,") {
        Some((base, flags)) => (base, flags),
        None => (name, ""),
    }
}

/// Files to process: everything in new/, and files in cur/ not yet marked seen (S).
fn pending_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for sub in ["new", "cur"] {
        if !dir.join(sub).is_dir() {
            return Err(AppError::usage(format!(
                "--maildir {}: not a Maildir (no {sub}/ directory)",
                dir.display()
            )));
        }
    }
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        let entries = std::fs::read_dir(dir.join(sub))
            .with_context(|| format!("listing {}", dir.join(sub).display()))?;
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.join(sub).display()))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            if sub == "cur" && split_info(&name).1.contains('S') {
                continue;
            }
            files.push(e.path());
        }
    }
    files.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
    Ok(files)
}

/// Move a handled file to cur/ with the seen flag (and flagged, for a person, when it could
/// not be read as an e-mail), so no later run counts it again.
fn mark_processed(dir: &Path, file: &Path, malformed: bool) -> Result<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (base, flags) = split_info(&name);
    let mut flags: Vec<char> = flags.chars().collect();
    flags.push('S');
    if malformed {
        flags.push('F');
    }
    flags.sort_unstable();
    flags.dedup();
    let target = dir
        .join("cur")
        .join(format!("{base}:2,{}", flags.iter().collect::<String>()));
    std::fs::rename(file, &target)
        .with_context(|| format!("moving {} to {}", file.display(), target.display()))?;
    Ok(target)
}

async fn ingest_maildir(
    ctx: &Context,
    dir: &Path,
    max_bytes: usize,
    now: DateTime<Utc>,
) -> Result<IngestReport> {
    let files = pending_files(dir)?;
    let mut report = IngestReport::default();
    if files.is_empty() {
        return Ok(report);
    }
    let pool = ctx.db.pool(1)?;
    let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    for file in files {
        let display = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .display()
            .to_string();
        let size = std::fs::metadata(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        let mut outcome = if size > max_bytes as u64 {
            Outcome::malformed(format!(
                "message is {size} bytes, over the cap of {max_bytes} bytes"
            ))
        } else {
            let raw =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // A database failure stops the run and leaves this file where it is.
            ingest_bytes(&mut *conn, &raw, max_bytes, now)
                .await
                .with_context(|| format!("ingesting {display}"))?
        };
        mark_processed(dir, &file, outcome.result == "malformed")?;
        outcome.file = Some(display);
        report.push(outcome);
    }
    evaluate_rate_alerts(&*conn, &report, now).await?;
    Ok(report)
}

/// `autopilot contact resume CONTACT_ID`: a person lets automatic e-mail to a contact who
/// replied go on. Cards held at the reply stay `blocked`: a person re-approves what should
/// still go out.
pub async fn run_contact(ctx: &Context, r: &ResumeOptions) -> Result<u8> {
    let pool = ctx.db.pool(1)?;
    let mut conn = crate::schema::get_checked(&pool, &ctx.db).await?;
    let now = ctx.now();
    let tx = conn.transaction().await?;
    let tenant: Uuid = match tx.query_opt(CONTACT_TENANT, &[&r.contact_id]).await? {
        Some(row) => row.get(0),
        None => {
            return Err(AppError::failed(format!(
                "contact {} not found; nothing resumed",
                r.contact_id
            )))
        }
    };
    if let Some(by) = r.by {
        match tx.query_opt(PROFILE_TENANT, &[&by]).await? {
            Some(row) if row.get::<_, Uuid>(0) == tenant => {}
            Some(_) => {
                return Err(AppError::usage(format!(
                    "profile {by} (--by) does not belong to the contact's tenant"
                )))
            }
            None => return Err(AppError::usage(format!("unknown profile {by} (--by)"))),
        }
    }
    let resumed = tx
        .query(
            RESUME,
            &[&r.contact_id, &Some(tenant), &now, &r.by, &r.note],
        )
        .await
        .context("resuming the contact")?
        .len();
    tx.commit().await.context("committing the resume")?;
    if r.json {
        println!(
            "{}",
            serde_json::json!({"contact_id": r.contact_id, "tenant_id": tenant, "resumed": resumed})
        );
    } else if resumed == 0 {
        println!("contact {}: no open hold; nothing to resume", r.contact_id);
    } else {
        println!(
            "contact {}: automatic e-mail resumed ({resumed} hold(s) ended); cards held at the reply stay blocked until re-approved",
            r.contact_id
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_info_is_split_from_the_name() {
        assert_eq!(split_info("123.abc.host:2,FS"), ("123.abc.host", "FS"));
        assert_eq!(split_info("123.abc.host"), ("123.abc.host", ""));
    }
}
