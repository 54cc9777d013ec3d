//! Reading one inbound message (pure: bytes in, a classification out, nothing touched).
//!
//! MIME is parsed by `mail-parser`; what this module adds is the meaning: an RFC 3464
//! delivery status notification, an RFC 5965 (ARF) feedback report, or ordinary mail that may
//! be a reply, with the RFC 3834 signs of an automatic answer. Which autopilot message a
//! report or reply is about is left to the caller, who gets every candidate Message-ID.

use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// `<id>` whatever brackets and blanks the input had; None when nothing is left.
pub fn normalize_id(raw: &str) -> Option<String> {
    let t = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!t.is_empty() && !t.contains(char::is_whitespace)).then(|| format!("<{t}>"))
}

/// Every `<…>` token of a header value (In-Reply-To and References may hold several; some
/// clients separate them with commas).
fn ids_in(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else { break };
        if let Some(id) = normalize_id(&after[..end]) {
            out.push(id);
        }
        rest = &after[end + 1..];
    }
    if out.is_empty() {
        // Some MTAs write a bare id (Original-Envelope-Id usually is one).
        out.extend(raw.split_whitespace().filter_map(normalize_id));
    }
    out
}

/// The header's raw (undecoded, unfolded) value in the top-level header block.
fn raw_header(m: &Message<'_>, name: &str) -> Option<String> {
    m.header_raw(name).map(unfold)
}

fn unfold(v: &str) -> String {
    v.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn text_values(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// `Name: value` groups of a message/delivery-status or message/feedback-report body,
/// separated by blank lines; names lower case, continuation lines unfolded.
fn field_groups(body: &str) -> Vec<Vec<(String, String)>> {
    let mut groups: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = current.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            current.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; Pat@Example.COM` → `pat@example.com`.
fn typed_address(v: &str) -> Option<String> {
    let addr = v.split_once(';').map(|(_, a)| a).unwrap_or(v).trim();
    let addr = addr.trim_start_matches('<').trim_end_matches('>').trim();
    addr.contains('@').then(|| addr.to_lowercase())
}

fn status_code(v: &str) -> Option<String> {
    let token = v.split_whitespace().next()?;
    let parts: Vec<&str> = token.split('.').collect();
    let ok = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    ok.then(|| token.to_string())
}

fn lower_ctype<'x>(part: &impl MimeHeaders<'x>) -> Option<String> {
    part.content_type().map(|ct| {
        format!(
            "{}/{}",
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase()
        )
    })
}

/// Signs of an automatic answer (RFC 3834 and what autoresponders do in practice).
fn automatic_reason(m: &Message<'_>, subject: Option<&str>) -> Option<String> {
    if let Some(v) = raw_header(m, "Auto-Submitted") {
        let token = v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !token.is_empty() && token != "no" {
            return Some(format!("Auto-Submitted: {token}"));
        }
    }
    for h in ["X-Autoreply", "X-Autorespond", "X-Autoresponder"] {
        if raw_header(m, h).is_some() {
            return Some(format!("{h} header"));
        }
    }
    if let Some(p) = raw_header(m, "Precedence") {
        let p = p.trim().to_ascii_lowercase();
        if matches!(p.as_str(), "bulk" | "junk" | "list" | "auto_reply") {
            return Some(format!("Precedence: {p}"));
        }
    }
    if raw_header(m, "List-Id").is_some() {
        return Some("mailing list (List-Id)".into());
    }
    if let Some(rp) = raw_header(m, "Return-Path") {
        if rp.trim() == "<>" {
            return Some("null envelope sender (Return-Path: <>)".into());
        }
    }
    automatic_subject(subject.unwrap_or(""))
}

/// Subjects that autoresponders and non-standard bounce messages use.
pub fn automatic_subject(subject: &str) -> Option<String> {
    let s = subject.trim().to_lowercase();
    const AUTO_SUBJECTS: &[&str] = &[
        "out of office",
        "out-of-office",
        "automatic reply",
        "auto reply",
        "auto-reply",
        "autoreply",
        "auto:",
        "automatische antwort",
        "abwesenheitsnotiz",
        "réponse automatique",
        "respuesta automática",
        "risposta automatica",
        "undeliverable",
        "undelivered mail",
        "delivery status notification",
        "mail delivery failed",
        "returned mail",
    ];
    AUTO_SUBJECTS
        .iter()
        .find(|p| s.starts_with(**p))
        .map(|p| format!("subject starts with \"{p}\""))
}

/// A multipart whose closing boundary never comes was cut off in transit.
fn check_complete(m: &Message<'_>, raw: &[u8]) -> Result<(), Malformed> {
    for part in &m.parts {
        if !matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let Some(ct) = part.content_type() else {
            continue;
        };
        let Some(boundary) = ct.attribute("boundary") else {
            return Err(Malformed(format!(
                "malformed MIME: multipart/{} without a boundary",
                ct.subtype().unwrap_or("?")
            )));
        };
        let closing = format!("--{boundary}--");
        if !contains(raw, closing.as_bytes()) {
            return Err(Malformed(format!(
                "truncated MIME: the closing boundary of a multipart/{} part is missing",
                ct.subtype().unwrap_or("?")
            )));
        }
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Parse and classify one message. `Err` means the input is not something to ingest.
pub fn classify(raw: &[u8], max_bytes: usize) -> Result<Inbound, Malformed> {
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
        Some("delivery-status") => {
            let status = report_part(
                &m,
                &["message/delivery-status", "message/global-delivery-status"],
            )
            .ok_or_else(|| {
                Malformed(
                    "malformed delivery status notification: no message/delivery-status part"
                        .into(),
                )
            })?;
            let groups = field_groups(&status);
            let per_message = groups.first().cloned().unwrap_or_default();
            let envelope_id = field(&per_message, "original-envelope-id").map(str::to_string);
            let recipients: Vec<DsnRecipient> = groups
                .iter()
                .filter(|g| field(g, "final-recipient").is_some() || field(g, "action").is_some())
                .map(|g| DsnRecipient {
                    final_recipient: field(g, "final-recipient").and_then(typed_address),
                    original_recipient: field(g, "original-recipient").and_then(typed_address),
                    action: field(g, "action").map(|a| a.trim().to_ascii_lowercase()),
                    status: field(g, "status").and_then(status_code),
                    diagnostic: field(g, "diagnostic-code").map(str::to_string),
                })
                .collect();
            if recipients.is_empty() {
                return Err(Malformed(
                    "malformed delivery status notification: no recipient fields".into(),
                ));
            }
            let mut refs = returned_message_ids(&m);
            if let Some(env) = &envelope_id {
                refs.extend(ids_in(env));
            }
            (
                refs,
                Kind::Dsn {
                    recipients,
                    envelope_id,
                },
            )
        }
        Some("feedback-report") => {
            let report = report_part(&m, &["message/feedback-report"]).ok_or_else(|| {
                Malformed("malformed feedback report: no message/feedback-report part".into())
            })?;
            let groups = field_groups(&report);
            let g = groups.first().cloned().unwrap_or_default();
            let feedback_type = field(&g, "feedback-type")
                .map(|t| t.trim().to_ascii_lowercase())
                .ok_or_else(|| Malformed("malformed feedback report: no Feedback-Type".into()))?;
            let original_rcpt = field(&g, "original-rcpt-to").and_then(typed_address);
            (
                returned_message_ids(&m),
                Kind::Feedback {
                    feedback_type,
                    original_rcpt,
                },
            )
        }
        _ => {
            let mut refs = Vec::new();
            for v in [m.in_reply_to(), m.references()] {
                for t in text_values(v) {
                    refs.extend(ids_in(&t).into_iter().chain(normalize_id(&t)));
                }
            }
            for h in ["In-Reply-To", "References"] {
                if let Some(v) = raw_header(&m, h) {
                    refs.extend(ids_in(&v));
                }
            }
            let automatic = automatic_reason(&m, subject.as_deref());
            (refs, Kind::Mail { automatic })
        }
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

/// The body of the first part of one of `types`, as text.
fn report_part(m: &Message<'_>, types: &[&str]) -> Option<String> {
    m.parts.iter().find_map(|p| {
        let t = lower_ctype(p)?;
        types
            .contains(&t.as_str())
            .then(|| String::from_utf8_lossy(p.contents()).to_string())
    })
}

/// Message-IDs of the message a report returns (message/rfc822 or text/rfc822-headers).
fn returned_message_ids(m: &Message<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for p in m.parts.iter().skip(1) {
        match (&p.body, lower_ctype(p).as_deref()) {
            (PartType::Message(inner), _) => {
                out.extend(inner.message_id().and_then(normalize_id));
                if let Some(v) = inner.header_raw("Message-ID") {
                    out.extend(ids_in(v));
                }
            }
            (_, Some("text/rfc822-headers")) | (_, Some("message/rfc822-headers")) => {
                let mut headers = p.contents().to_vec();
                headers.extend_from_slice(b"\r\n\r\n");
                if let Some(inner) = MessageParser::default().parse_headers(&headers) {
                    out.extend(inner.message_id().and_then(normalize_id));
                }
            }
            _ => {}
        }
    }
    out
}

/// A subject without reply and forward prefixes ("Re: AW: Fwd: x" → "x"), lower case.
pub fn thread_subject(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let lower = s.to_lowercase();
        let stripped = [
            "re:", "aw:", "sv:", "antw:", "fw:", "fwd:", "wg:", "tr:", "re :",
        ]
        .iter()
        .find(|p| lower.starts_with(**p))
        .map(|p| s[p.len()..].trim_start());
        match stripped {
            Some(rest) => s = rest,
            None => break,
        }
    }
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_normalized_with_brackets() {
        assert_eq!(normalize_id(" <a@b> ").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_id("a@b").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_id("<>"), None);
        assert_eq!(
            ids_in("<a@b>, <c@d>\r\n <e@f>"),
            vec!["<a@b>", "<c@d>", "<e@f>"]
        );
    }

    #[test]
    fn thread_subject_strips_reply_prefixes() {
        assert_eq!(thread_subject("Re: AW: Fwd:  Checking   in"), "checking in");
        assert_eq!(thread_subject("RE: Checking in"), "checking in");
        assert_eq!(thread_subject("Checking in"), "checking in");
    }

    #[test]
    fn status_codes_are_validated() {
        assert_eq!(status_code("5.1.1 (bad address)").as_deref(), Some("5.1.1"));
        assert_eq!(status_code("4.4.7").as_deref(), Some("4.4.7"));
        assert_eq!(status_code("550"), None);
        assert_eq!(status_code("6.1.1"), None);
    }

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
