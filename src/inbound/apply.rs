//! What an inbound message changes: matching it to the agent's card, then, in one
//! transaction that starts by recording the message (so a second ingestion changes
//! nothing), suppressing a bounced or complaining address, or holding a contact who replied.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::{Begin, Fence, FencedTx, Sql};
use crate::inbound::classify::{thread_subject, Inbound, Kind};

mod effects;

const MATCH_BY_IDS: &str = crate::sql!("inbound/match_by_ids");
const MATCH_BY_SENDER: &str = crate::sql!("inbound/match_by_sender");
const INSERT_EVENT: &str = crate::sql!("inbound/insert_event");

/// Transient failures of one address within 30 days that suppress it.
pub const SOFT_BOUNCE_LIMIT: i64 = 3;

/// The agent's card an inbound message is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRef {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub contact_id: Option<Uuid>,
    pub client_id: Option<Uuid>,
    /// The address the card was sent to (lower case).
    pub email: Option<String>,
    pub subject: Option<String>,
}

impl CardRef {
    fn from_row(r: &tokio_postgres::Row) -> CardRef {
        CardRef {
            id: r.get(0),
            tenant_id: r.get(1),
            contact_id: r.get(2),
            client_id: r.get(3),
            email: r.get(4),
            subject: r.get(5),
        }
    }
}

/// What a recognised message means for the card's recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Bounce { status: String },
    SoftBounce { status: String },
    Complaint { feedback_type: String },
    Reply,
    AutoReply { reason: String },
}

impl Effect {
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Bounce { .. } => "bounce",
            Effect::SoftBounce { .. } => "soft_bounce",
            Effect::Complaint { .. } => "complaint",
            Effect::Reply => "reply",
            Effect::AutoReply { .. } => "auto_reply",
        }
    }
    fn status(&self) -> Option<String> {
        match self {
            Effect::Bounce { status } | Effect::SoftBounce { status } => Some(status.clone()),
            Effect::Complaint { feedback_type } => Some(feedback_type.clone()),
            Effect::AutoReply { reason } => Some(reason.clone()),
            Effect::Reply => None,
        }
    }
}

/// The result of one message, as reported (`--json`: one element of `messages`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Outcome {
    /// bounce, soft_bounce, complaint, reply, auto_reply, ignored, duplicate or malformed.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message_id: Option<String>,
    pub tenant_id: Option<Uuid>,
    pub card_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub email: Option<String>,
    pub status: Option<String>,
    /// The address was added to `email_suppressions` by this message.
    pub suppressed: bool,
    /// Approved cards held (moved to `blocked`) because the contact replied.
    pub held_cards: Vec<Uuid>,
    /// The card created for a person to answer a reply.
    pub task_card_id: Option<Uuid>,
    pub reason: String,
}

impl Outcome {
    pub fn ignored(message_id: Option<String>, reason: impl Into<String>) -> Outcome {
        Outcome {
            result: "ignored".into(),
            message_id,
            reason: reason.into(),
            ..Outcome::default()
        }
    }
    pub fn malformed(reason: impl Into<String>) -> Outcome {
        Outcome {
            result: "malformed".into(),
            reason: reason.into(),
            ..Outcome::default()
        }
    }
    /// Whether this message changed something (suppression, hold, card, clock).
    pub fn changed(&self) -> bool {
        matches!(
            self.result.as_str(),
            "bounce" | "soft_bounce" | "complaint" | "reply"
        )
    }
}

/// Card ids carried by the agent's own Message-IDs (`<card-UUID@domain>`).
fn card_ids(refs: &[String]) -> Vec<Uuid> {
    refs.iter()
        .filter_map(|r| {
            let inner = r.strip_prefix("<card-")?;
            let (id, _) = inner.split_once('@')?;
            Uuid::parse_str(id).ok()
        })
        .collect()
}

/// The card the message is about: named by a Message-ID, or (mail only) sent to the
/// message's sender with the same thread subject.
pub async fn find_card(c: &impl Sql, msg: &Inbound, now: DateTime<Utc>) -> Result<Option<CardRef>> {
    if !msg.refs.is_empty() {
        if let Some(row) = c
            .query_opt(MATCH_BY_IDS, &[&msg.refs, &card_ids(&msg.refs)])
            .await
            .context("matching Message-IDs to sent cards")?
        {
            return Ok(Some(CardRef::from_row(&row)));
        }
    }
    if let (Kind::Mail { .. }, Some(from), Some(subject)) = (&msg.kind, &msg.from, &msg.subject) {
        let wanted = thread_subject(subject);
        if wanted.is_empty() {
            return Ok(None);
        }
        let rows = c
            .query(MATCH_BY_SENDER, &[from, &now])
            .await
            .context("matching a sender to sent cards")?;
        return Ok(rows
            .iter()
            .map(CardRef::from_row)
            .find(|card| card.subject.as_deref().map(thread_subject) == Some(wanted.clone())));
    }
    Ok(None)
}

/// What the message means for `card`; Err is why it is left alone.
pub fn decide(msg: &Inbound, card: &CardRef) -> std::result::Result<Effect, String> {
    match &msg.kind {
        Kind::Dsn { recipients, .. } => {
            let about_card = |r: &&crate::inbound::classify::DsnRecipient| {
                card.email.is_some()
                    && (r.final_recipient == card.email || r.original_recipient == card.email)
            };
            let r = recipients
                .iter()
                .find(about_card)
                .or_else(|| recipients.iter().find(|r| r.class() == Some(5)))
                .or_else(|| recipients.iter().find(|r| r.class() == Some(4)))
                .or_else(|| recipients.first())
                .ok_or_else(|| "delivery status notification without recipients".to_string())?;
            let status = r
                .status
                .clone()
                .unwrap_or_else(|| r.action.clone().unwrap_or_else(|| "unknown".into()));
            match r.class() {
                Some(5) => Ok(Effect::Bounce { status }),
                Some(4) => Ok(Effect::SoftBounce { status }),
                Some(2) => Err(format!(
                    "delivery status notification reports success ({status}): nothing to do"
                )),
                _ => Err("delivery status notification without a status or action".into()),
            }
        }
        Kind::Feedback { feedback_type, .. } => match feedback_type.as_str() {
            "abuse" | "fraud" | "virus" | "other" => Ok(Effect::Complaint {
                feedback_type: feedback_type.clone(),
            }),
            t => Err(format!("feedback report of type {t} is not a complaint")),
        },
        Kind::Mail {
            automatic: Some(reason),
        } => Ok(Effect::AutoReply {
            reason: reason.clone(),
        }),
        Kind::Mail { automatic: None } => Ok(Effect::Reply),
    }
}

/// Why a message with no matching card is left alone.
pub fn unmatched_reason(msg: &Inbound) -> String {
    match &msg.kind {
        Kind::Dsn { .. } => "delivery status notification about a message autopilot did not send (no recorded Message-ID matches)".into(),
        Kind::Feedback { .. } => "feedback report about a message autopilot did not send (no recorded Message-ID matches)".into(),
        Kind::Mail { .. } if msg.refs.is_empty() => "not about a message autopilot sent (no In-Reply-To or References, and no sent card to the sender with this subject)".into(),
        Kind::Mail { .. } => "not about a message autopilot sent (In-Reply-To/References name no recorded Message-ID)".into(),
    }
}

/// Everything one recognised message changes, in one transaction. The event row goes in
/// first: when it is already there the transaction changes nothing (`duplicate`).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    c: &mut impl Begin,
    fence: Option<&Fence>,
    source: &str,
    key: &str,
    message_id: Option<String>,
    card: &CardRef,
    effect: &Effect,
    details: Value,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let mut out = Outcome {
        result: effect.kind().into(),
        message_id,
        tenant_id: Some(card.tenant_id),
        card_id: Some(card.id),
        contact_id: card.contact_id,
        email: card.email.clone(),
        status: effect.status(),
        ..Outcome::default()
    };
    let msg = effects::Received {
        source,
        key,
        details: &details,
        now,
    };
    let tx = FencedTx::begin(c, fence).await?;
    let Some(event) = record_event(&tx, card, effect, &out.status, &msg).await? else {
        tx.rollback().await.ok();
        out.result = "duplicate".into();
        out.reason = "already ingested: nothing changed".into();
        return Ok(out);
    };
    effects::apply_effect(&tx, card, effect, &msg, event, &mut out).await?;
    tx.commit()
        .await
        .context("committing the inbound message")?;
    Ok(out)
}

/// The new event row's id; None when this message was already recorded.
async fn record_event(
    tx: &impl Sql,
    card: &CardRef,
    effect: &Effect,
    status: &Option<String>,
    msg: &effects::Received<'_>,
) -> Result<Option<Uuid>> {
    Ok(tx
        .query_opt(
            INSERT_EVENT,
            &[
                &card.tenant_id,
                &msg.source,
                &msg.key,
                &effect.kind(),
                &card.id,
                &card.contact_id,
                &card.email,
                status,
                msg.details,
                &msg.now,
            ],
        )
        .await
        .context("recording the inbound message")?
        .map(|r| r.get(0)))
}

/// Match, decide and apply one parsed message.
pub async fn ingest(c: &mut impl Begin, msg: &Inbound, now: DateTime<Utc>) -> Result<Outcome> {
    let Some(card) = find_card(&*c, msg, now).await? else {
        return Ok(Outcome::ignored(
            msg.message_id.clone(),
            unmatched_reason(msg),
        ));
    };
    let effect = match decide(msg, &card) {
        Ok(e) => e,
        Err(reason) => {
            let mut o = Outcome::ignored(msg.message_id.clone(), reason);
            o.tenant_id = Some(card.tenant_id);
            o.card_id = Some(card.id);
            return Ok(o);
        }
    };
    let details = match &msg.kind {
        Kind::Dsn {
            recipients,
            envelope_id,
        } => json!({"recipients": recipients, "envelope_id": envelope_id, "from": msg.from}),
        Kind::Feedback {
            feedback_type,
            original_rcpt,
        } => {
            json!({"feedback_type": feedback_type, "original_rcpt": original_rcpt, "from": msg.from})
        }
        Kind::Mail { automatic } => {
            json!({"from": msg.from, "subject": msg.subject, "automatic": automatic, "refs": msg.refs})
        }
    };
    apply(
        c,
        None,
        "mail",
        &msg.key,
        msg.message_id.clone(),
        &card,
        &effect,
        details,
        now,
    )
    .await
}
