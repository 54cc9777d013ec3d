//! The Act phase: each planned action passes the policies (a blocked one is recorded),
//! then the drafts, review tasks and promotions are written in one fenced transaction and
//! the approved e-mails are sent (see `email`).

use anyhow::{Context as _, Result};
use serde_json::json;
use uuid::Uuid;

use super::plan::Planned;
use super::state::Cycle;
use super::{Shared, TenantRow};
use crate::db::{Begin, Sql};
use crate::email::{self, SendReport};
use crate::engagement::{self, Draft, FollowUp};
use crate::orders::{self, ReviewTarget};
use crate::policy::{self, Action, Block};
use crate::settings::TenantSettings;

/// The planned actions that passed the policies, by kind.
#[derive(Default)]
struct Approved {
    drafts: Vec<(FollowUp, Draft)>,
    reviews: Vec<ReviewTarget>,
    promotes: Vec<Uuid>,
    sends: i64,
}

pub(super) async fn run(
    c: &mut impl Begin,
    sh: &Shared<'_>,
    t: &TenantRow,
    cy: &mut Cycle,
    settings: &TenantSettings,
    planned: Vec<Planned>,
) -> Result<SendReport> {
    let (approved, blocks) = apply_policies(&*c, t, cy, settings, planned).await?;
    cy.m.actions_blocked += blocks.len() as i32;
    record_blocks(c, cy, &blocks).await?;
    write_cards(c, cy, &approved).await?;
    // Called even with nothing to send: it also parks cards left `executing` by an
    // interrupted send.
    let fence = cy.fence;
    let report = email::send_approved(
        c,
        cy.tenant,
        Some(fence.run_id),
        Some(&fence),
        settings,
        sh.mailer.as_ref(),
        approved.sends,
        cy.now,
    )
    .await
    .context("sending approved e-mails")?;
    account_sends(cy, settings, &report, approved.sends);
    Ok(report)
}

async fn apply_policies(
    c: &impl Sql,
    t: &TenantRow,
    cy: &Cycle,
    settings: &TenantSettings,
    planned: Vec<Planned>,
) -> Result<(Approved, Vec<(Action, Block)>)> {
    let mut ok = Approved::default();
    let mut blocks = Vec::new();
    // The policy verdict on one action; a blocked action is kept for the record.
    let mut passes = async |action: Action| -> Result<bool> {
        match policy::evaluate(c, cy.tenant, settings, &action, cy.now).await? {
            Some(block) => {
                blocks.push((action, block));
                Ok(false)
            }
            None => Ok(true),
        }
    };
    for p in planned {
        match p {
            Planned::Send => ok.sends += 1,
            // Drafting a card is not a send: no quota (defect 11); suppressed contacts were
            // already left out of the follow-ups.
            Planned::FollowUp(f) => {
                let draft = engagement::draft_followup(&f, t.name.as_str());
                let payload = json!({"to": f.email, "subject": draft.subject, "contact_id": f.contact_id, "draft": true});
                if passes(Action::new("send_email", payload)).await? {
                    ok.drafts.push((f, draft));
                }
            }
            Planned::Review(target) => {
                let mut action = Action::new("create_task", orders::review_card_payload(&target));
                action.justification.escalates_order_exception =
                    matches!(target.severity.as_str(), "error" | "critical");
                if passes(action).await? {
                    ok.reviews.push(target);
                }
            }
            Planned::Promote(id) => {
                let action = Action::new("move_card", json!({"card_id": id, "to": "suggested"}));
                if passes(action).await? {
                    ok.promotes.push(id);
                }
            }
        }
    }
    Ok((ok, blocks))
}

/// Record policy blocks (fenced).
async fn record_blocks(c: &mut impl Begin, cy: &Cycle, blocks: &[(Action, Block)]) -> Result<()> {
    if blocks.is_empty() {
        return Ok(());
    }
    let tx = cy.fence.begin(c).await?;
    for (action, block) in blocks {
        policy::record(&tx, cy.tenant, Some(cy.fence.run_id), action, block, cy.now).await?;
    }
    tx.commit().await
}

/// Drafts, review tasks and promotions in one fenced transaction.
async fn write_cards(c: &mut impl Begin, cy: &mut Cycle, ok: &Approved) -> Result<()> {
    if ok.drafts.is_empty() && ok.reviews.is_empty() && ok.promotes.is_empty() {
        return Ok(());
    }
    let (tenant, run_id, now) = (cy.tenant, cy.fence.run_id, cy.now);
    let tx = cy.fence.begin(c).await?;
    let drafted =
        engagement::insert_followup_cards(&tx, tenant, run_id, &ok.drafts, now).await? as i32;
    let reviews = review_cards(&ok.reviews);
    let reviewed = crate::cards::insert_suggested(&tx, tenant, run_id, "create_task", &reviews, now)
        .await? as i32;
    let promoted = crate::cards::promote_scheduled(&tx, tenant, &ok.promotes, now).await? as i32;
    tx.commit().await?;
    cy.m.cards_created += drafted + reviewed;
    cy.m.actions_executed += drafted + reviewed + promoted;
    if drafted > 0 {
        cy.changes
            .push(format!("drafted {drafted} follow-up e-mail card(s)"));
    }
    if reviewed > 0 {
        cy.changes.push(format!(
            "opened {reviewed} review task(s) for order exceptions"
        ));
    }
    if promoted > 0 {
        cy.changes
            .push(format!("moved {promoted} scheduled card(s) to suggested"));
    }
    Ok(())
}

/// Review cards for order exceptions a person must look at (one open card per order).
fn review_cards(targets: &[ReviewTarget]) -> Vec<crate::cards::NewCard> {
    targets
        .iter()
        .map(|t| crate::cards::NewCard {
            target: t.order_id,
            client_id: t.client_id,
            contact_id: None,
            title: orders::review_card_title(t),
            description: t.message.clone(),
            rationale: format!(
                "Unresolved {} {} exception on this order needs a person to review it.",
                t.severity, t.exception_type
            ),
            priority: if t.severity == "critical" {
                "high"
            } else {
                "medium"
            },
            payload: orders::review_card_payload(t),
        })
        .collect()
}

/// The sender's outcome in the run's metrics and the reflection's lines.
fn account_sends(cy: &mut Cycle, settings: &TenantSettings, r: &SendReport, sends: i64) {
    cy.m.emails_sent += r.sent as i32;
    cy.m.actions_executed += r.sent as i32;
    cy.m.actions_blocked += (r.blocked + r.invalid + r.deferred_rate_limited.min(1)) as i32;
    if r.sent > 0 {
        cy.changes.push(format!("sent {} e-mail(s)", r.sent));
    }
    let b = &mut cy.blockers;
    if r.provider_missing && sends > 0 {
        b.push(format!(
            "no e-mail provider configured (SMTP_URL and EMAIL_FROM): {sends} approved card(s) wait"
        ));
    }
    if r.circuit_open {
        b.push("e-mail sending paused: 5 or more provider failures in 15 minutes".to_string());
    }
    if r.deferred_rate_limited > 0 {
        b.push(format!(
            "hourly e-mail limit ({}) reached; {} approved card(s) wait for the next hour",
            settings.max_emails_per_hour, r.deferred_rate_limited
        ));
    }
    if r.recovered_stuck > 0 {
        b.push(format!(
            "{} card(s) were found executing after an interrupted send and were parked for a human",
            r.recovered_stuck
        ));
    }
    if r.awaiting_person > 0 {
        b.push(format!(
            "{} e-mail card(s) parked with delivery unknown wait for a person: check the mailbox for their Message-IDs, then run `autopilot card requeue CARD_ID` or `autopilot card close CARD_ID`",
            r.awaiting_person
        ));
    }
}
