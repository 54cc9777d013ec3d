//! Building a card's message: the validated payload, headers (Message-ID, List-Unsubscribe,
//! List-Id), and an HTML body with its plain-text alternative.

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use serde_json::Value;
use uuid::Uuid;

use super::html::{html_to_text, looks_like_html};
use super::MailerConfig;
use crate::settings::TenantSettings;

/// An approved `send_email` card, its payload validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CardToSend {
    pub id: Uuid,
    pub client_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub payload: Value,
}

impl CardToSend {
    /// From a card's `action_payload` (`to`, `subject`, `body`); the error says what is wrong.
    pub fn from_payload(
        id: Uuid,
        client_id: Option<Uuid>,
        contact_id: Option<Uuid>,
        payload: Value,
    ) -> std::result::Result<CardToSend, String> {
        let field = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or("")
                .to_string()
        };
        let to = field("to");
        let subject = field("subject");
        let body = payload
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if to.is_empty() {
            return Err("payload has no recipient ('to')".into());
        }
        if to.parse::<Address>().is_err() {
            return Err(format!("payload 'to' is not an e-mail address: {to}"));
        }
        if subject.is_empty() {
            return Err("payload has no 'subject'".into());
        }
        if body.trim().is_empty() {
            return Err("payload has no 'body'".into());
        }
        Ok(CardToSend {
            id,
            client_id,
            contact_id,
            to,
            subject,
            body,
            payload,
        })
    }
}

/// The deterministic Message-ID of a card's e-mail (with the angle brackets).
pub fn message_id_for(card_id: Uuid, domain: &str) -> String {
    format!("<card-{card_id}@{domain}>")
}

/// The `List-Unsubscribe` value for the tenant's settings, if any.
pub fn list_unsubscribe(settings: &TenantSettings) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(url) = &settings.unsubscribe_url {
        parts.push(format!("<{url}>"));
    }
    if let Some(addr) = &settings.unsubscribe_mailto {
        parts.push(format!("<mailto:{addr}>"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// CRLF line ends, in one pass. lettre converts bare LFs itself, but by inserting each CR
/// into the string (quadratic: 17 s for an 8 MB body in a debug build).
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut prev = '\0';
    for ch in text.chars() {
        if ch == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(ch);
        prev = ch;
    }
    out
}

/// The `List-Id` (RFC 2919) of a tenant's follow-ups: one list per tenant, named under the
/// sender's domain. Sent beside `List-Unsubscribe` (a list header without it looks like a
/// partial list to spam filters: SpamAssassin's LIST_PARTIAL_SHORT_MSG).
pub fn list_id(tenant: Uuid, domain: &str) -> String {
    format!("<followups.{tenant}.{domain}>")
}

/// Build the message for a card: From, To, Subject, Date, the card's Message-ID,
/// `MIME-Version: 1.0`, the body (HTML with a plain-text alternative), and List-Unsubscribe
/// with List-Id when configured.
pub fn build_message(
    cfg: &MailerConfig,
    tenant: Uuid,
    card: &CardToSend,
    settings: &TenantSettings,
    now: DateTime<Utc>,
) -> Result<Message> {
    let to: Mailbox = card
        .to
        .parse()
        .with_context(|| format!("card {}: recipient is not an e-mail address", card.id))?;
    // A header value must not contain line breaks.
    let subject = card
        .subject
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut builder = Message::builder()
        .from(cfg.from.clone())
        .to(to)
        .subject(subject)
        .date(SystemTime::from(now))
        .message_id(Some(message_id_for(card.id, cfg.from_domain())));
    if let Some(value) = list_unsubscribe(settings) {
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Id"),
                list_id(tenant, cfg.from_domain()),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                value,
            ));
        if settings.unsubscribe_url.is_some() {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ));
        }
    }
    // Both shapes go through lettre's MIME builders, which add `MIME-Version: 1.0`
    // (RFC 2045) once.
    let message = if looks_like_html(&card.body) {
        builder.multipart(MultiPart::alternative_plain_html(
            crlf(&html_to_text(&card.body)),
            crlf(&card.body),
        ))
    } else {
        builder.singlepart(SinglePart::plain(crlf(&card.body)))
    };
    message.with_context(|| format!("card {}: building the message", card.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::test_support::cfg;
    use chrono::TimeZone;
    use serde_json::json;

    fn card(body: &str) -> CardToSend {
        CardToSend::from_payload(
            Uuid::parse_str("7d3c6f0e-1b2a-4c5d-8e9f-0a1b2c3d4e5f").unwrap(),
            None,
            None,
            json!({"to": "pat@client.example", "subject": "Checking in", "body": body}),
        )
        .unwrap()
    }

    fn tenant() -> Uuid {
        Uuid::parse_str("11111111-2222-4333-8444-555555555555").unwrap()
    }

    fn rendered(m: &Message) -> String {
        String::from_utf8(m.formatted()).unwrap()
    }

    #[test]
    fn message_has_the_headers_a_mailbox_provider_expects() {
        let now = Utc.with_ymd_and_hms(2025, 3, 4, 10, 30, 0).unwrap();
        let m = build_message(
            &cfg(),
            tenant(),
            &card("Hello Pat,\njust checking in."),
            &TenantSettings::default(),
            now,
        )
        .unwrap();
        let text = rendered(&m);
        assert!(
            text.contains("From: Agent <agent@amc.example>\r\n"),
            "{text}"
        );
        assert!(text.contains("To: pat@client.example\r\n"), "{text}");
        assert!(text.contains("Subject: Checking in\r\n"), "{text}");
        assert!(
            text.contains("Date: Tue, 04 Mar 2025 10:30:00 +0000\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Message-ID: <card-7d3c6f0e-1b2a-4c5d-8e9f-0a1b2c3d4e5f@amc.example>\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(!text.contains("List-Unsubscribe"), "{text}");
    }

    #[test]
    fn list_unsubscribe_headers_follow_the_settings() {
        let now = Utc::now();
        let both = TenantSettings {
            unsubscribe_url: Some("https://amc.example/u?t=1".into()),
            unsubscribe_mailto: Some("unsub@amc.example".into()),
            ..TenantSettings::default()
        };
        let text = rendered(&build_message(&cfg(), tenant(), &card("hi"), &both, now).unwrap());
        assert!(
            text.contains(
                "List-Unsubscribe: <https://amc.example/u?t=1>, <mailto:unsub@amc.example>\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{text}"
        );
        let mailto_only = TenantSettings {
            unsubscribe_mailto: Some("unsub@amc.example".into()),
            ..TenantSettings::default()
        };
        let text =
            rendered(&build_message(&cfg(), tenant(), &card("hi"), &mailto_only, now).unwrap());
        assert!(
            text.contains("List-Unsubscribe: <mailto:unsub@amc.example>\r\n"),
            "{text}"
        );
        assert!(!text.contains("List-Unsubscribe-Post"), "{text}");
    }

    #[test]
    fn html_body_gets_a_plain_text_alternative() {
        let html = "<html><body><p>Hello&nbsp;Pat,</p><p>Our <b>new</b> rates are out.<br>Best, AMC</p></body></html>";
        let text = rendered(
            &build_message(
                &cfg(),
                tenant(),
                &card(html),
                &TenantSettings::default(),
                Utc::now(),
            )
            .unwrap(),
        );
        assert!(
            text.contains("Content-Type: multipart/alternative"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/html; charset=utf-8"),
            "{text}"
        );
        assert_eq!(
            html_to_text(html),
            "Hello Pat,\n\nOur new rates are out.\nBest, AMC"
        );
    }

    #[test]
    fn bare_line_feeds_become_crlf_once() {
        assert_eq!(crlf("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf(""), "");
    }

    #[test]
    fn html_detection_ignores_angle_brackets_in_prose() {
        assert!(looks_like_html("<p>Hi</p>"));
        assert!(looks_like_html("Hi<br/>there"));
        assert!(looks_like_html("<!DOCTYPE html><html></html>"));
        assert!(!looks_like_html(
            "Fees < 500 and > 200, reply to <pat@x.example>"
        ));
        assert!(!looks_like_html("plain text"));
    }

    #[test]
    fn payload_problems_are_named() {
        let id = Uuid::new_v4();
        assert!(
            CardToSend::from_payload(id, None, None, json!({"subject": "s", "body": "b"}))
                .unwrap_err()
                .contains("to")
        );
        assert!(CardToSend::from_payload(
            id,
            None,
            None,
            json!({"to": "nope", "subject": "s", "body": "b"})
        )
        .unwrap_err()
        .contains("not an e-mail"));
        assert!(CardToSend::from_payload(
            id,
            None,
            None,
            json!({"to": "a@b.example", "body": "b"})
        )
        .unwrap_err()
        .contains("subject"));
    }
}
