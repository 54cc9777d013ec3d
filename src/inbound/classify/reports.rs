//! Reports about a message the agent sent: an RFC 3464 delivery status notification (its
//! recipients, statuses and envelope id) or an RFC 5965 (ARF) feedback report, read from
//! their `Name: value` groups, and the Message-IDs of the message they return.

use mail_parser::{Message, MessageParser, PartType};

use super::headers::{ids_in, lower_ctype, normalize_id};
use super::{DsnRecipient, Kind, Malformed};

/// A `multipart/report; report-type=delivery-status`: the returned message's ids and the
/// recipients' statuses.
pub(super) fn dsn(m: &Message<'_>) -> Result<(Vec<String>, Kind), Malformed> {
    let status = report_part(
        m,
        &["message/delivery-status", "message/global-delivery-status"],
    )
    .ok_or_else(|| {
        Malformed("malformed delivery status notification: no message/delivery-status part".into())
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
    let mut refs = returned_message_ids(m);
    if let Some(env) = &envelope_id {
        refs.extend(ids_in(env));
    }
    Ok((
        refs,
        Kind::Dsn {
            recipients,
            envelope_id,
        },
    ))
}

/// A `multipart/report; report-type=feedback-report`: the returned message's ids, the
/// feedback type and the complaining recipient.
pub(super) fn feedback(m: &Message<'_>) -> Result<(Vec<String>, Kind), Malformed> {
    let report = report_part(m, &["message/feedback-report"]).ok_or_else(|| {
        Malformed("malformed feedback report: no message/feedback-report part".into())
    })?;
    let groups = field_groups(&report);
    let g = groups.first().cloned().unwrap_or_default();
    let feedback_type = field(&g, "feedback-type")
        .map(|t| t.trim().to_ascii_lowercase())
        .ok_or_else(|| Malformed("malformed feedback report: no Feedback-Type".into()))?;
    let original_rcpt = field(&g, "original-rcpt-to").and_then(typed_address);
    Ok((
        returned_message_ids(m),
        Kind::Feedback {
            feedback_type,
            original_rcpt,
        },
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_validated() {
        assert_eq!(status_code("5.1.1 (bad address)").as_deref(), Some("5.1.1"));
        assert_eq!(status_code("4.4.7").as_deref(), Some("4.4.7"));
        assert_eq!(status_code("550"), None);
        assert_eq!(status_code("6.1.1"), None);
    }
}
