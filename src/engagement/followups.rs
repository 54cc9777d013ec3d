//! Follow-ups the cycle drafts cards from: overdue contacts not yet covered by an open card
//! or a suppression, the wording of the follow-up e-mail by how overdue the contact is,
//! and the set-based insert of the cards that allows at most one open card per contact.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::cards::NewCard;
use crate::db::Sql;

/// Overdue contact clocks worth a follow-up: not already covered by another `send_email`
/// card for the contact, not held after a reply (`contact_email_holds`), and neither the contact nor its address suppressed (addresses
/// compare case-insensitively, as `email_suppressions_tenant_lower_email_idx` expects).
/// Contacts without an address are kept so the caller can name them as blockers.
///
/// A card covers the contact whoever created it (the agent or a person; matched by contact,
/// by the agent's target or by the recipient address) when it is open (suggested, in_review,
/// approved, executing), parked because its delivery is unknown (the contact may have the
/// e-mail already), or was sent within the clock's interval (a send that did not reset the
/// clock, e.g. a person's card naming only the address, still counts as this interval's touch).
/// The interval is capped at 100 years so an absurd setting cannot overflow the date. Both
/// lookups are index probes (`kanban_cards_email_contact_idx`, `kanban_cards_email_to_idx`),
/// so the plan stays a nested loop that stops at the limit.
const OVERDUE_FOLLOWUPS_SQL: &str = crate::sql!("engagement/overdue_followups");

/// An overdue contact the agent may write to (or, without `email`, must name as a blocker).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FollowUp {
    pub clock_id: Uuid,
    pub contact_id: Uuid,
    pub client_id: Option<Uuid>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub title: Option<String>,
    pub company_name: Option<String>,
    pub days_overdue: i32,
    pub priority_score: f64,
}

impl FollowUp {
    /// "Pat Doe", or whatever part of the name is known, or the address.
    pub fn display_name(&self) -> String {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            name
        } else if let Some(email) = &self.email {
            email.clone()
        } else {
            format!("contact {}", self.contact_id)
        }
    }
}

/// The tenant's overdue contacts still needing a follow-up, in violation order, at most `limit`.
pub async fn overdue_followups(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<FollowUp>> {
    let rows = c
        .query(OVERDUE_FOLLOWUPS_SQL, &[&tenant, &now, &limit.max(0)])
        .await
        .with_context(|| format!("listing the overdue contacts of tenant {tenant}"))?;
    Ok(rows
        .iter()
        .map(|r| FollowUp {
            clock_id: r.get("clock_id"),
            contact_id: r.get("contact_id"),
            client_id: r.get("client_id"),
            email: r.get("email"),
            first_name: r.get("first_name"),
            last_name: r.get("last_name"),
            title: r.get("title"),
            company_name: r.get("company_name"),
            days_overdue: r.get("days_overdue"),
            priority_score: r.get("priority_score"),
        })
        .collect())
}

/// A drafted follow-up e-mail (plain text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Draft {
    pub subject: String,
    pub body: String,
}

/// Overdue bands that decide the wording: below 7 days a check-in, below 30 a value-led
/// follow-up, from 30 on a re-engagement note.
pub const GENTLE_BELOW_DAYS: i32 = 7;

pub const VALUE_BELOW_DAYS: i32 = 30;

/// Draft the follow-up for `f`, signed by `sender_company` (the tenant).
pub fn draft_followup(f: &FollowUp, sender_company: &str) -> Draft {
    let first = f
        .first_name
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("there");
    let company = f
        .company_name
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("your team");
    let sender = sender_company.trim();
    let sender = if sender.is_empty() {
        "our team"
    } else {
        sender
    };
    let (subject, middle) = if f.days_overdue < GENTLE_BELOW_DAYS {
        (
            format!("Checking in from {sender}"),
            format!(
                "I wanted to check in and see how things are going at {company}. \
                 Is there anything on your pipeline where we can help with appraisals or \
                 turn times?"
            ),
        )
    } else if f.days_overdue < VALUE_BELOW_DAYS {
        (
            format!("A few ideas for {company}"),
            format!(
                "I have been thinking about {company}'s upcoming volume and wanted to share how \
                 we can help: faster turnaround on rush orders, proactive status updates, and a \
                 single point of contact for revisions. Would a short call this week be useful?"
            ),
        )
    } else {
        (
            format!("Reconnecting with {company}"),
            format!(
                "It has been a while since we last spoke, and I would like to reconnect. A lot \
                 has changed on our side, and I would welcome the chance to hear what {company} \
                 needs today and whether we can support you again."
            ),
        )
    };
    let body = format!("Hi {first},\n\n{middle}\n\nBest regards,\n{sender}\n");
    Draft { subject, body }
}

/// Card priority from the clock's score: a decision-maker or primary contact well overdue
/// is high; anyone noticeably overdue is medium.
pub fn card_priority(score: f64) -> &'static str {
    if score >= 50.0 {
        "high"
    } else if score >= 20.0 {
        "medium"
    } else {
        "low"
    }
}

/// Insert one suggested `send_email` card per draft (contacts without an address are
/// skipped: a card needs a recipient). Returns the cards inserted; a contact that already
/// has an open agent e-mail card (from an earlier cycle, or twice in this batch) gets none
/// (defect 10).
pub async fn insert_followup_cards(
    c: &impl Sql,
    tenant: Uuid,
    run_id: Uuid,
    drafts: &[(FollowUp, Draft)],
    now: DateTime<Utc>,
) -> Result<u64> {
    let cards: Vec<NewCard> = drafts
        .iter()
        .filter_map(|(f, d)| {
            let to = f.email.as_deref()?;
            let name = f.display_name();
            Some(NewCard {
                target: f.contact_id,
                client_id: f.client_id,
                contact_id: Some(f.contact_id),
                title: card_title(f, &name),
                description: d.body.clone(),
                rationale: card_rationale(f, &name),
                priority: card_priority(f.priority_score),
                payload: serde_json::json!({
                    "to": to,
                    "subject": d.subject,
                    "body": d.body,
                    "contact_id": f.contact_id,
                    "clock_id": f.clock_id,
                    "days_overdue": f.days_overdue,
                }),
            })
        })
        .collect();
    crate::cards::insert_suggested(c, tenant, run_id, "send_email", &cards, now)
        .await
        .with_context(|| format!("inserting follow-up cards of tenant {tenant}"))
}

fn card_title(f: &FollowUp, name: &str) -> String {
    match f.company_name.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(company) => format!("Follow up with {name} ({})", company.trim()),
        None => format!("Follow up with {name}"),
    }
}

/// Why the card exists, for the person reviewing it.
fn card_rationale(f: &FollowUp, name: &str) -> String {
    format!(
        "{name} is {} day{} overdue for a touch (priority {:.2}).",
        f.days_overdue,
        if f.days_overdue == 1 { "" } else { "s" },
        f.priority_score
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followup(days: i32) -> FollowUp {
        FollowUp {
            clock_id: Uuid::nil(),
            contact_id: Uuid::nil(),
            client_id: None,
            email: Some("pat@acme.test".into()),
            first_name: Some("Pat".into()),
            last_name: Some("Doe".into()),
            title: None,
            company_name: Some("Acme Lending".into()),
            days_overdue: days,
            priority_score: 0.0,
        }
    }

    fn band(days: i32) -> &'static str {
        let d = draft_followup(&followup(days), "Summit AMC");
        if d.subject.starts_with("Checking in") {
            "gentle"
        } else if d.subject.starts_with("A few ideas") {
            "value"
        } else if d.subject.starts_with("Reconnecting") {
            "reengage"
        } else {
            panic!("unexpected subject {:?}", d.subject)
        }
    }

    #[test]
    fn under_seven_days_overdue_is_a_gentle_check_in() {
        assert_eq!(band(0), "gentle");
        assert_eq!(band(6), "gentle");
    }

    #[test]
    fn seven_to_twenty_nine_days_overdue_is_a_value_led_follow_up() {
        assert_eq!(band(7), "value");
        assert_eq!(band(29), "value");
    }

    #[test]
    fn thirty_days_or_more_overdue_is_a_re_engagement_note() {
        assert_eq!(band(30), "reengage");
        assert_eq!(band(400), "reengage");
    }

    #[test]
    fn draft_greets_by_first_name_names_the_company_and_signs_with_the_sender() {
        for days in [1, 10, 45] {
            let d = draft_followup(&followup(days), "Summit AMC");
            assert!(d.body.starts_with("Hi Pat,\n\n"), "{}", d.body);
            assert!(d.body.contains("Acme Lending"), "{}", d.body);
            assert!(d.body.trim_end().ends_with("Summit AMC"), "{}", d.body);
            assert!(!d.body.contains('<'), "plain text expected: {}", d.body);
        }
    }

    #[test]
    fn draft_without_name_or_company_still_reads_naturally() {
        let mut f = followup(3);
        f.first_name = None;
        f.company_name = Some("  ".into());
        let d = draft_followup(&f, "Summit AMC");
        assert!(d.body.starts_with("Hi there,"), "{}", d.body);
        assert!(d.body.contains("your team"), "{}", d.body);
    }

    #[test]
    fn card_priority_follows_the_score() {
        assert_eq!(card_priority(85.0), "high");
        assert_eq!(card_priority(50.0), "high");
        assert_eq!(card_priority(49.99), "medium");
        assert_eq!(card_priority(20.0), "medium");
        assert_eq!(card_priority(19.0), "low");
    }
}
