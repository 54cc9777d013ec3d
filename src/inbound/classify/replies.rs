//! What tells a reply from an automatic answer (the RFC 3834 signs and what autoresponders
//! do in practice), and the subject of a thread without its reply prefixes.

use mail_parser::Message;

use super::headers::{ids_in, normalize_id, raw_header, text_values};
use super::Kind;

/// Ordinary mail: the ids it answers (In-Reply-To, References) and whether it is an
/// automatic answer.
pub(super) fn reply(m: &Message<'_>, subject: Option<&str>) -> (Vec<String>, Kind) {
    let mut refs = Vec::new();
    for v in [m.in_reply_to(), m.references()] {
        for t in text_values(v) {
            refs.extend(ids_in(&t).into_iter().chain(normalize_id(&t)));
        }
    }
    for h in ["In-Reply-To", "References"] {
        if let Some(v) = raw_header(m, h) {
            refs.extend(ids_in(&v));
        }
    }
    let automatic = automatic_reason(m, subject);
    (refs, Kind::Mail { automatic })
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
    fn thread_subject_strips_reply_prefixes() {
        assert_eq!(thread_subject("Re: AW: Fwd:  Checking   in"), "checking in");
        assert_eq!(thread_subject("RE: Checking in"), "checking in");
        assert_eq!(thread_subject("Checking in"), "checking in");
    }
}
