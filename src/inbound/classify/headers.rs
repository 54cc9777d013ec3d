//! The headers of an inbound message: Message-IDs as they appear in headers, raw and
//! decoded header values, content types, and the check that no multipart was cut off.

use mail_parser::{HeaderValue, Message, MimeHeaders, PartType};

use super::Malformed;

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
pub(super) fn ids_in(raw: &str) -> Vec<String> {
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
pub(super) fn raw_header(m: &Message<'_>, name: &str) -> Option<String> {
    m.header_raw(name).map(unfold)
}

pub(super) fn unfold(v: &str) -> String {
    v.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn text_values(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn lower_ctype<'x>(part: &impl MimeHeaders<'x>) -> Option<String> {
    part.content_type().map(|ct| {
        format!(
            "{}/{}",
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase()
        )
    })
}

/// A multipart whose closing boundary never comes was cut off in transit.
pub(super) fn check_complete(m: &Message<'_>, raw: &[u8]) -> Result<(), Malformed> {
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
}
