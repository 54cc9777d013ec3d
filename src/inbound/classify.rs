//! Reading one inbound message (pure: bytes in, a classification out, nothing touched).
//!
//! MIME is parsed by `mail-parser`; what this module adds is the meaning: an RFC 3464
//! delivery status notification, an RFC 5965 (ARF) feedback report, or ordinary mail that may
//! be a reply, with the RFC 3834 signs of an automatic answer. Which autopilot message a
//! report or reply is about is left to the caller, who gets every candidate Message-ID.
//!
//! This file holds the verdict ([`classify`]); `headers` reads headers, `reports` delivery
//! status notifications and feedback reports, `replies` replies and automatic answers.

mod headers;
mod replies;
mod reports;

use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;
use sha2::{Digest, Sha256};

use headers::{check_complete, unfold};
use replies::reply;
use reports::{dsn, feedback};

pub use headers::normalize_id;
pub use replies::{automatic_subject, thread_subject};

/// Default cap on one message (bytes). A DSN or a reply is a few kilobytes; a message far
/// larger is not what this command is for and is refused before parsing.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;

/// Why input is not something to ingest (exit 2, nothing written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One recipient block of a delivery status notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DsnRecipient {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<String>,
    /// RFC 3463 status, `5.1.1`.
    pub status: Option<String>,
    pub diagnostic: Option<String>,
}

impl DsnRecipient {
    /// The class of the status (2, 4 or 5); a `failed` action without a status is permanent,
    /// a `delayed` one transient (RFC 3464 §2.3.3).
    pub fn class(&self) -> Option<u8> {
        if let Some(s) = &self.status {
            return s
                .chars()
                .next()
                .and_then(|c| c.to_digit(10))
                .map(|d| d as u8);
        }
        match self.action.as_deref() {
            Some("failed") => Some(5),
            Some("delayed") => Some(4),
            Some("delivered" | "relayed" | "expanded") => Some(2),
            _ => None,
        }
    }
}

/// What the message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `multipart/report; report-type=delivery-status`.
    Dsn {
        recipients: Vec<DsnRecipient>,
        envelope_id: Option<String>,
    },
    /// `multipart/report; report-type=feedback-report`.
    Feedback {
        feedback_type: String,
        original_rcpt: Option<String>,
    },
    /// Anything else: a reply when it names or comes from the agent's thread, unless
    /// `automatic` says why it is an automatic answer.
    Mail { automatic: Option<String> },
}

/// A parsed inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Identifies the message for idempotency: its Message-ID (`<…>`), else a hash of it.
    pub key: String,
    pub message_id: Option<String>,
    /// The From address, lower case.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// Message-IDs (`<…>`) that may name the agent's message: for a report the returned
    /// message's Message-ID and the envelope id; for mail In-Reply-To and References.
    pub refs: Vec<String>,
    pub kind: Kind,
}

/// The message without an mbox-style envelope line, if it can be one: within the size
/// cap, not empty, no NUL bytes, starting with a header field.
fn message_bytes(raw: &[u8], max_bytes: usize) -> Result<&[u8], Malformed> {
    if raw.len() > max_bytes {
        return Err(Malformed(format!(
            "message is {} bytes, over the cap of {max_bytes} bytes",
            raw.len()
        )));
    }
    // An mbox-style envelope line ("From sender date"), as some pipe transports prepend.
    let raw = if raw.starts_with(b"From ") {
        match raw.iter().position(|b| *b == b'\n') {
            Some(nl) => &raw[nl + 1..],
            None => &raw[raw.len()..],
        }
    } else {
        raw
    };
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Malformed("empty input: not an e-mail message".into()));
    }
    if raw.contains(&0) {
        return Err(Malformed(
            "not an e-mail message: the input holds NUL bytes".into(),
        ));
    }
    // The header block must start with a header field ("Name: value").
    let first_line = raw.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let looks_like_field = first_line
        .iter()
        .position(|b| *b == b':')
        .map(|colon| {
            colon > 0
                && first_line[..colon]
                    .iter()
                    .all(|b| b.is_ascii_graphic() && *b != b':')
        })
        .unwrap_or(false);
    if !looks_like_field {
        return Err(Malformed(
            "not an e-mail message: it does not start with a header field".into(),
        ));
    }
    Ok(raw)
}

/// Parse and classify one message. `Err` means the input is not something to ingest.
pub fn classify(raw: &[u8], max_bytes: usize) -> Result<Inbound, Malformed> {
    let raw = message_bytes(raw, max_bytes)?;
    let m = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| Malformed("not an e-mail message: no header block".into()))?;
    let from = m
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address.as_deref())
        .map(|a| a.trim().to_lowercase());
    if m.from().is_none() {
        return Err(Malformed(
            "not an e-mail message: it has no From header".into(),
        ));
    }
    check_complete(&m, raw)?;

    let message_id = m.message_id().and_then(normalize_id);
    let key = message_id.clone().unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(raw);
        format!("sha256:{}", hex::encode(h.finalize()))
    });
    let subject = m.subject().map(unfold);

    let root_type = m.content_type().map(|ct| {
        (
            format!(
                "{}/{}",
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase()
            ),
            ct.attribute("report-type").map(|r| r.to_ascii_lowercase()),
        )
    });
    let report_type = match &root_type {
        Some((t, Some(r))) if t == "multipart/report" => Some(r.clone()),
        _ => None,
    };

    let (refs, kind) = match report_type.as_deref() {
        Some("delivery-status") => dsn(&m)?,
        Some("feedback-report") => feedback(&m)?,
        _ => reply(&m, subject.as_deref()),
    };
    let mut refs = refs;
    refs.sort();
    refs.dedup();
    Ok(Inbound {
        key,
        message_id,
        from,
        subject,
        refs,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_an_email() {
        for input in [
            &b""[..],
            b"   \n",
            b"hello world\n",
            b"\x00\x01binary",
            b"{\"json\": 1}",
        ] {
            assert!(classify(input, DEFAULT_MAX_BYTES).is_err(), "{input:?}");
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/mail/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const CARD: &str = "<card-7d3c6f0e-1b2a-4c5d-8e9f-0a1b2c3d4e5f@amc.example>";

    #[test]
    fn postfix_bounce_is_a_dsn_naming_the_returned_message() {
        let m = classify(&fixture("postfix_bounce_5.1.1.eml"), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(m.refs, vec![CARD.to_string()]);
        let Kind::Dsn { recipients, .. } = &m.kind else {
            panic!("{m:?}")
        };
        assert_eq!(recipients.len(), 1);
        assert_eq!(
            recipients[0].final_recipient.as_deref(),
            Some("pat@client.example")
        );
        assert_eq!(recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(recipients[0].class(), Some(5));
        assert!(recipients[0]
            .diagnostic
            .as_deref()
            .unwrap()
            .contains("User unknown"));
    }

    #[test]
    fn exim_bounce_carries_the_whole_message() {
        let m = classify(&fixture("exim_bounce_full_message.eml"), DEFAULT_MAX_BYTES).unwrap();
        assert!(m.refs.contains(&CARD.to_string()), "{:?}", m.refs);
        let Kind::Dsn { recipients, .. } = &m.kind else {
            panic!("{m:?}")
        };
        assert_eq!(recipients[0].status.as_deref(), Some("5.0.0"));
    }

    #[test]
    fn delay_notice_is_transient() {
        let m = classify(&fixture("postfix_delayed_4.4.1.eml"), DEFAULT_MAX_BYTES).unwrap();
        let Kind::Dsn { recipients, .. } = &m.kind else {
            panic!("{m:?}")
        };
        assert_eq!(recipients[0].class(), Some(4));
        assert_eq!(recipients[0].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn arf_report_is_feedback_naming_the_original() {
        let m = classify(&fixture("arf_complaint.eml"), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(m.refs, vec![CARD.to_string()]);
        assert_eq!(
            m.kind,
            Kind::Feedback {
                feedback_type: "abuse".into(),
                original_rcpt: Some("pat@client.example".into())
            }
        );
    }

    #[test]
    fn replies_and_automatic_answers() {
        let r = classify(&fixture("reply_threaded.eml"), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(r.kind, Kind::Mail { automatic: None });
        assert_eq!(r.refs, vec![CARD.to_string()]);
        assert_eq!(r.from.as_deref(), Some("pat@client.example"));
        let u = classify(&fixture("reply_unthreaded.eml"), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(u.kind, Kind::Mail { automatic: None });
        assert!(u.refs.is_empty());
        for f in [
            "out_of_office_auto_submitted.eml",
            "out_of_office_subject_only.eml",
        ] {
            let m = classify(&fixture(f), DEFAULT_MAX_BYTES).unwrap();
            assert!(
                matches!(m.kind, Kind::Mail { automatic: Some(_) }),
                "{f}: {m:?}"
            );
        }
    }

    #[test]
    fn truncated_report_and_text_are_malformed() {
        let e = classify(&fixture("truncated_dsn.eml"), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(e.0.contains("truncated"), "{e}");
        let e = classify(&fixture("not_an_email.txt"), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(e.0.contains("not an e-mail"), "{e}");
    }

    #[test]
    fn auto_submitted_no_is_an_ordinary_reply() {
        let raw = b"From: pat@client.example\r\nSubject: Re: Checking in\r\nAuto-Submitted: no\r\nIn-Reply-To: <card-x@amc.example>\r\n\r\nYes.\r\n";
        let m = classify(raw, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(m.kind, Kind::Mail { automatic: None });
        let bulk = b"From: pat@client.example\r\nSubject: Re: Checking in\r\nPrecedence: bulk\r\n\r\nx\r\n";
        assert!(matches!(
            classify(bulk, DEFAULT_MAX_BYTES).unwrap().kind,
            Kind::Mail { automatic: Some(_) }
        ));
    }

    #[test]
    fn a_dsn_returning_a_cut_off_multipart_message_is_still_a_dsn() {
        // Exim returns at most bounce_return_size_limit bytes of the original: the returned
        // message's own multipart may end mid-part, the report itself is complete.
        let text = String::from_utf8(fixture("exim_bounce_full_message.eml")).unwrap();
        let cut = text.replace(
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\nMIME-Version: 1.0\n\nHello Pat,\nhow are the appraisals going?\n",
            "MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"inner\"\n\n--inner\nContent-Type: text/plain\n\nHello Pat,\n\n------ This is a copy of the message's headers and the first part only ------\n",
        );
        assert_ne!(cut, text);
        let m = classify(cut.as_bytes(), DEFAULT_MAX_BYTES).unwrap();
        assert!(matches!(m.kind, Kind::Dsn { .. }), "{m:?}");
        assert!(m.refs.contains(&CARD.to_string()));
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let big = vec![b'a'; 100];
        let e = classify(&big, 10).unwrap_err();
        assert!(e.0.contains("over the cap"), "{e}");
    }
}
