//! The policy engine (SPEC §5). Every action the agent would take is checked against the
//! policies in a fixed order; the first that blocks decides and is recorded in
//! `agent_policy_violations` with the run id.
//!
//! Order: human_task_no_request, research_before_exhaustion, rate_limit, sensitive_action,
//! suppression (fail closed), action_not_allowed. The rate-limit check in that position
//! only looks at the quota; the quota is taken (atomically, by `rate_limit_take`) after
//! every policy passed, so an action blocked by a later policy uses no quota, and a take
//! that loses a race still ends as a `rate_limit` block.

use crate::db::Sql;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::settings::TenantSettings;

/// The kinds of block, stored as `agent_policy_violations.violation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Violation {
    HumanTaskNoRequest,
    ResearchBeforeExhaustion,
    RateLimit,
    SensitiveAction,
    Suppression,
    ActionNotAllowed,
}

impl Violation {
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::HumanTaskNoRequest => "human_task_no_request",
            Violation::ResearchBeforeExhaustion => "research_before_exhaustion",
            Violation::RateLimit => "rate_limit",
            Violation::SensitiveAction => "sensitive_action",
            Violation::Suppression => "suppression",
            Violation::ActionNotAllowed => "action_not_allowed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    pub violation: Violation,
    pub reason: String,
}

/// Why a human task may be created anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskJustification {
    pub client_requested: bool,
    pub compliance_deadline_due: bool,
    /// Escalates an unresolved error/critical order exception (the agent's review tasks).
    pub escalates_order_exception: bool,
}

/// One action as the policies see it.
#[derive(Debug, Clone)]
pub struct Action {
    /// `send_email`, `create_task`, `call`, `research`, `move_card`.
    pub action_type: String,
    pub payload: Value,
    pub justification: TaskJustification,
    /// For e-mail sends: the recipient, checked against suppressions.
    pub recipient_email: Option<String>,
    pub recipient_contact: Option<Uuid>,
    /// Whether the action counts against an hourly quota (sends and research do; drafting
    /// a card does not — defect 11).
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    EmailSend,
    Research,
}

impl Quota {
    pub fn action_type(self) -> &'static str {
        match self {
            Quota::EmailSend => "email_send",
            Quota::Research => "research",
        }
    }
    fn limit(self, s: &TenantSettings) -> i32 {
        match self {
            Quota::EmailSend => s.max_emails_per_hour,
            Quota::Research => s.max_research_per_hour,
        }
    }
}

impl Action {
    pub fn new(action_type: &str, payload: Value) -> Action {
        Action {
            action_type: action_type.to_string(),
            payload,
            justification: TaskJustification::default(),
            recipient_email: None,
            recipient_contact: None,
            quota: None,
        }
    }
}

/// Human tasks: work the agent would hand to a person.
pub fn is_human_task(action_type: &str) -> bool {
    matches!(action_type, "create_task" | "call")
}

const DESTRUCTIVE_PHRASES: &[&str] = &[
    "delete all",
    "mass delete",
    "unsubscribe all",
    "truncate",
    "drop table",
    "drop database",
    "drop schema",
    "drop all",
];

/// Whether a payload names a destructive operation anywhere in its strings (keys included).
pub fn names_destructive_operation(payload: &Value) -> Option<String> {
    fn walk(v: &Value, hit: &mut Option<String>) {
        if hit.is_some() {
            return;
        }
        let check = |s: &str, hit: &mut Option<String>| {
            let norm = s.to_lowercase().replace(['_', '-'], " ");
            let norm = norm.split_whitespace().collect::<Vec<_>>().join(" ");
            // A bare operation name ("drop") is destructive; the word inside prose is not.
            if norm == "drop" {
                *hit = Some(s.to_string());
                return;
            }
            for p in DESTRUCTIVE_PHRASES {
                if norm.contains(p) {
                    *hit = Some((*p).to_string());
                    return;
                }
            }
        };
        match v {
            Value::String(s) => check(s, hit),
            Value::Array(items) => items.iter().for_each(|i| walk(i, hit)),
            Value::Object(map) => {
                for (k, v) in map {
                    check(k, hit);
                    walk(v, hit);
                }
            }
            _ => {}
        }
    }
    let mut hit = None;
    walk(payload, &mut hit);
    hit
}

const HAS_ENGAGEMENT_VIOLATIONS: &str = crate::sql!("policy/has_engagement_violations");

const QUOTA_USED: &str = crate::sql!("policy/quota_used");

const TAKE_QUOTA: &str = crate::sql!("policy/take_quota");

// A contact who replied (an open hold, see `inbound`) gets no automatic e-mail either.
const IS_SUPPRESSED: &str = crate::sql!("policy/is_suppressed");

// An unacknowledged bounce or complaint rate alert pauses the tenant's sending (see
// `inbound::feedback`); reported as a rate limit so the cards stay approved.
const SENDING_PAUSED: &str = crate::sql!("policy/sending_paused");

pub const INSERT_VIOLATION: &str = crate::sql!("policy/insert_violation");

/// Check an action against every policy in order. Allowed actions with a quota have taken
/// one unit of it when this returns `Ok(None)`.
///
/// Call it outside a transaction (or in one you can afford to lose): the suppression
/// check fails closed, and a failed query aborts the surrounding transaction.
pub async fn evaluate(
    c: &impl Sql,
    tenant: Uuid,
    settings: &TenantSettings,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<Option<Block>> {
    if let Some(b) = human_task_block(action) {
        return Ok(Some(b));
    }
    if let Some(b) = research_block(c, tenant, action, now).await? {
        return Ok(Some(b));
    }
    if let Some(b) = sending_paused_block(c, tenant, action).await? {
        return Ok(Some(b));
    }
    if let Some(b) = quota_used_block(c, tenant, settings, action, now).await? {
        return Ok(Some(b));
    }
    if let Some(phrase) = names_destructive_operation(&action.payload) {
        return Ok(Some(Block {
            violation: Violation::SensitiveAction,
            reason: format!("payload names a destructive operation ({phrase})"),
        }));
    }
    if let Some(b) = suppression_block(c, tenant, action).await {
        return Ok(Some(b));
    }
    let kind = action.action_type.as_str();
    if !settings.allows(kind) {
        return Ok(Some(Block {
            violation: Violation::ActionNotAllowed,
            reason: format!("action type {kind} is not in allowed_action_types"),
        }));
    }
    take_quota(c, tenant, settings, action, now).await
}

/// A human task needs a reason: the client asked, a deadline, or an order exception.
fn human_task_block(action: &Action) -> Option<Block> {
    let kind = action.action_type.as_str();
    let j = action.justification;
    if !is_human_task(kind)
        || j.client_requested
        || j.compliance_deadline_due
        || j.escalates_order_exception
    {
        return None;
    }
    Some(Block {
        violation: Violation::HumanTaskNoRequest,
        reason: format!(
            "{kind} is a human task: allowed only when the client asked, a compliance deadline is due, or it escalates an error/critical order exception"
        ),
    })
}

/// Research waits while any engagement clock of the tenant is overdue.
async fn research_block(
    c: &impl Sql,
    tenant: Uuid,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<Option<Block>> {
    if action.action_type != "research" {
        return Ok(None);
    }
    let busy: bool = c
        .query_one(HAS_ENGAGEMENT_VIOLATIONS, &[&tenant, &now])
        .await
        .context("checking engagement violations")?
        .get(0);
    Ok(busy.then(|| Block {
        violation: Violation::ResearchBeforeExhaustion,
        reason: "research waits until the tenant has no overdue engagement clocks".into(),
    }))
}

/// An e-mail waits while sending is paused by an unacknowledged alert.
async fn sending_paused_block(
    c: &impl Sql,
    tenant: Uuid,
    action: &Action,
) -> Result<Option<Block>> {
    if action.quota != Some(Quota::EmailSend) {
        return Ok(None);
    }
    Ok(c.query_opt(SENDING_PAUSED, &[&tenant])
        .await
        .context("checking the sending pause")?
        .map(|row| {
            let why: String = row.get(0);
            Block {
                violation: Violation::RateLimit,
                reason: format!("e-mail sending paused until the alert is acknowledged: {why}"),
            }
        }))
}

/// The hourly quota is already used up (read only; [`take_quota`] takes the unit).
async fn quota_used_block(
    c: &impl Sql,
    tenant: Uuid,
    settings: &TenantSettings,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<Option<Block>> {
    let Some(q) = action.quota else {
        return Ok(None);
    };
    let used: i32 = c
        .query_one(QUOTA_USED, &[&tenant, &q.action_type(), &now])
        .await
        .context("reading the hourly quota")?
        .get(0);
    let limit = q.limit(settings);
    Ok((used >= limit).then(|| rate_limited(q, limit)))
}

/// A suppressed recipient blocks the action; so does a failed check (fail closed).
async fn suppression_block(c: &impl Sql, tenant: Uuid, action: &Action) -> Option<Block> {
    if action.recipient_email.is_none() && action.recipient_contact.is_none() {
        return None;
    }
    let email = action.recipient_email.clone().unwrap_or_default();
    match c
        .query_one(IS_SUPPRESSED, &[&tenant, &email, &action.recipient_contact])
        .await
    {
        Ok(row) => row.get::<_, bool>(0).then(|| Block {
            violation: Violation::Suppression,
            reason: format!(
                "{} is suppressed (unsubscribed, bounced, complained, or replied and waits for a person)",
                redact_addr(&email)
            ),
        }),
        Err(e) => Some(Block {
            violation: Violation::Suppression,
            reason: format!(
                "suppression list could not be checked, send blocked (fail closed): {}",
                crate::db::error_text(&e)
            ),
        }),
    }
}

/// Take one unit of the action's hourly quota, if it has one.
async fn take_quota(
    c: &impl Sql,
    tenant: Uuid,
    settings: &TenantSettings,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<Option<Block>> {
    let Some(q) = action.quota else {
        return Ok(None);
    };
    let limit = q.limit(settings);
    let took: bool = c
        .query_one(TAKE_QUOTA, &[&tenant, &q.action_type(), &limit, &now])
        .await
        .context("taking the hourly quota")?
        .get(0);
    Ok((!took).then(|| rate_limited(q, limit)))
}

fn rate_limited(q: Quota, limit: i32) -> Block {
    Block {
        violation: Violation::RateLimit,
        reason: format!(
            "hourly limit of {limit} {} reached for this UTC hour",
            q.action_type()
        ),
    }
}

fn redact_addr(email: &str) -> String {
    if email.is_empty() {
        "contact".to_string()
    } else {
        email.to_string()
    }
}

/// Record a block in `agent_policy_violations`.
pub async fn record(
    c: &impl Sql,
    tenant: Uuid,
    run_id: Option<Uuid>,
    action: &Action,
    block: &Block,
    now: DateTime<Utc>,
) -> Result<()> {
    c.execute(
        INSERT_VIOLATION,
        &[
            &tenant,
            &run_id,
            &block.violation.as_str(),
            &action.action_type,
            &action.payload,
            &block.reason,
            &now,
        ],
    )
    .await
    .context("recording a policy violation")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn destructive_payloads_are_recognised() {
        for p in [
            json!({"operation": "delete all contacts"}),
            json!({"sql": "DROP TABLE contacts"}),
            json!({"op": "TRUNCATE orders"}),
            json!({"action": "mass_delete"}),
            json!({"steps": ["x", {"do": "unsubscribe-all"}]}),
            json!({"operation": "drop"}),
        ] {
            assert!(names_destructive_operation(&p).is_some(), "{p}");
        }
    }

    #[test]
    fn ordinary_follow_up_is_not_destructive() {
        let p = json!({"to": "a@b.example", "subject": "Checking in", "body": "Happy to drop by next week or delete the old draft."});
        assert_eq!(names_destructive_operation(&p), None);
    }

    #[test]
    fn human_tasks_are_create_task_and_call() {
        assert!(is_human_task("create_task"));
        assert!(is_human_task("call"));
        assert!(!is_human_task("send_email"));
    }
}
