//! HTML bodies: telling an HTML body from plain text, and the plain-text alternative sent
//! with it.

const HTML_TAGS: &[&str] = &[
    "html",
    "body",
    "head",
    "p",
    "br",
    "div",
    "span",
    "a",
    "b",
    "i",
    "u",
    "em",
    "strong",
    "table",
    "tr",
    "td",
    "th",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "img",
    "hr",
    "blockquote",
    "pre",
    "font",
];

/// Whether a body is HTML: it contains a known HTML tag (`<p>`, `<br/>`, `</div>`, …).
pub fn looks_like_html(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while let Some(pos) = lower[i..].find('<') {
        let start = i + pos + 1;
        let mut j = start;
        if j < bytes.len() && (bytes[j] == b'/' || bytes[j] == b'!') {
            if lower[j..].starts_with("!doctype html") {
                return true;
            }
            j += 1;
        }
        let name_end = lower[j..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map(|e| j + e)
            .unwrap_or(lower.len());
        let name = &lower[j..name_end];
        let terminator_ok = lower[name_end..].starts_with(['>', ' ', '/', '\t', '\n']);
        if !name.is_empty() && terminator_ok && HTML_TAGS.contains(&name) {
            return true;
        }
        i = start;
    }
    false
}

/// A readable plain-text rendering of an HTML body (the text/plain alternative).
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut skip_until: Option<&str> = None;
    while let Some(lt) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&rest[..lt]);
        }
        let after = &rest[lt + 1..];
        let Some(gt) = after.find('>') else {
            if skip_until.is_none() {
                out.push_str(&rest[lt..]);
            }
            rest = "";
            break;
        };
        let tag = after[..gt].trim().to_ascii_lowercase();
        rest = &after[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if let Some(end) = skip_until {
            if closing && name == end {
                skip_until = None;
            }
            continue;
        }
        match (name.as_str(), closing) {
            ("script", false) => skip_until = Some("script"),
            ("style", false) => skip_until = Some("style"),
            ("head", false) => skip_until = Some("head"),
            ("br", _) => out.push('\n'),
            ("li", false) => out.push_str("\n- "),
            (
                "p" | "div" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol"
                | "blockquote" | "table",
                _,
            ) => out.push_str("\n\n"),
            ("hr", _) => out.push_str("\n----\n"),
            _ => {}
        }
    }
    if skip_until.is_none() {
        out.push_str(rest);
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    // Collapse runs of blank lines and trailing spaces.
    let mut text = String::new();
    let mut blank = 0;
    for line in decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    {
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !text.is_empty() {
            text.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        text.push_str(&line);
    }
    text
}
