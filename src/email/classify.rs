//! Classifying SMTP failures: the reply code and its enhanced status, where in the
//! conversation it failed, and whether the message may have been delivered.

use serde::Serialize;

use crate::error::redact;
use crate::smtp::{self, Stage};

/// `email_provider_failures.error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorType {
    Auth,
    RateLimit,
    Permanent5xx,
    Transient4xx,
    Timeout,
    Connection,
    Other,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::RateLimit => "rate_limit",
            ErrorType::Permanent5xx => "5xx",
            ErrorType::Transient4xx => "4xx",
            ErrorType::Timeout => "timeout",
            ErrorType::Connection => "connection",
            ErrorType::Other => "other",
        }
    }
}

/// A failed SMTP transaction, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub error_type: ErrorType,
    pub smtp_code: Option<u16>,
    /// The server's reply or the transport error, redacted.
    pub message: String,
    /// Where the conversation failed (None: the message could not even be built).
    pub stage: Option<Stage>,
    /// The server's reply text, when it answered.
    pub reply_text: Option<String>,
    /// The final dot was written and no verdict came back: the message may have been
    /// delivered, so the card must not be sent again automatically.
    pub ambiguous: bool,
}

/// The enhanced status code (RFC 3463, `x.y.z`) at the start of a reply text.
fn enhanced_status(text: &str) -> Option<(u8, u16, u16)> {
    let token = text.split_whitespace().next()?;
    let mut parts = token.splitn(3, '.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts
        .next()?
        .trim_end_matches([',', ';', ':'])
        .parse()
        .ok()?;
    matches!(class, 2 | 4 | 5).then_some((class, subject, detail))
}

/// Classify an SMTP reply code and its text.
pub fn classify_reply(code: u16, text: &str) -> ErrorType {
    let lower = text.to_lowercase();
    let enhanced = enhanced_status(text);
    if matches!(code, 530 | 534 | 535 | 538) {
        return ErrorType::Auth;
    }
    if (400..500).contains(&code) {
        let rate_text = ["rate", "too many", "throttl", "slow down"]
            .iter()
            .any(|w| lower.contains(w));
        let policy_status = matches!(enhanced, Some((4, 7, _)));
        if rate_text || policy_status {
            return ErrorType::RateLimit;
        }
        return ErrorType::Transient4xx;
    }
    if (500..600).contains(&code) {
        return ErrorType::Permanent5xx;
    }
    ErrorType::Other
}

/// Where a conversation failed, for [`SendFailure::from_smtp`]'s texts; `unknown` is the
/// warning appended when the message may have been delivered.
struct Where<'a> {
    host: &'a str,
    port: u16,
    stage: Stage,
    unknown: &'static str,
}

/// Error type, reply code, reply text and the message saying what failed.
type Classified = (ErrorType, Option<u16>, Option<String>, String);

impl Where<'_> {
    fn reply(&self, code: u16, text: String) -> Classified {
        let Where { host, port, .. } = self;
        let error_type = if self.stage == Stage::Auth && code >= 500 {
            ErrorType::Auth
        } else {
            classify_reply(code, &text)
        };
        let reply = if text.is_empty() {
            code.to_string()
        } else {
            format!("{code} {text}")
        };
        let message = format!("{host}:{port} replied {reply} {}", self.stage.describe());
        (error_type, Some(code), Some(text), message)
    }

    fn closed(&self) -> String {
        let Where { host, port, .. } = self;
        format!(
            "{host}:{port} closed the connection {} without answering{}",
            self.stage.describe(),
            self.unknown
        )
    }

    fn io(&self, error: &std::io::Error) -> Classified {
        let Where { host, port, .. } = self;
        let error_type = if error.kind() == std::io::ErrorKind::TimedOut {
            ErrorType::Timeout
        } else {
            ErrorType::Connection
        };
        let message = if self.stage == Stage::Connect {
            format!("connecting to {host}:{port} failed: {error}")
        } else {
            format!(
                "network error with {host}:{port} {}: {error}{}",
                self.stage.describe(),
                self.unknown
            )
        };
        (error_type, None, None, message)
    }

    fn protocol(&self, detail: &str) -> Classified {
        let Where { host, port, .. } = self;
        let error_type = match self.stage {
            Stage::Auth => ErrorType::Auth,
            Stage::StartTls | Stage::Tls => ErrorType::Connection,
            _ => ErrorType::Other,
        };
        let message = format!(
            "{host}:{port} {}: {detail}{}",
            self.stage.describe(),
            self.unknown
        );
        (error_type, None, None, message)
    }

    fn timed_out(&self, after: std::time::Duration) -> String {
        let Where { host, port, .. } = self;
        format!(
            "no answer from {host}:{port} within {} s {}{}",
            after.as_secs_f64(),
            self.stage.describe(),
            self.unknown
        )
    }
}

impl SendFailure {
    /// A failure before any conversation (the message could not be built).
    pub(super) fn local(message: String) -> SendFailure {
        SendFailure {
            error_type: ErrorType::Other,
            smtp_code: None,
            message,
            stage: None,
            reply_text: None,
            ambiguous: false,
        }
    }

    /// Classify a failed conversation. Each text says once what failed, where, and why.
    pub fn from_smtp(f: smtp::Failure, host: &str, port: u16) -> SendFailure {
        let ambiguous = f.after_final_dot();
        let at = Where {
            host,
            port,
            stage: f.stage(),
            unknown: if ambiguous {
                "; the message may have been delivered"
            } else {
                ""
            },
        };
        let (error_type, smtp_code, reply_text, message) = match f {
            smtp::Failure::Reply { code, text, .. } => at.reply(code, text),
            smtp::Failure::Closed { .. } => (ErrorType::Connection, None, None, at.closed()),
            smtp::Failure::Io { error, .. } => at.io(&error),
            smtp::Failure::Tls { error, .. } => (
                ErrorType::Connection,
                None,
                None,
                format!("TLS handshake with {host}:{port} failed: {error}"),
            ),
            smtp::Failure::Protocol { detail, .. } => at.protocol(&detail),
            smtp::Failure::Timeout { after, .. } => {
                (ErrorType::Timeout, None, None, at.timed_out(after))
            }
        };
        SendFailure {
            error_type,
            smtp_code,
            message: redact(&message),
            stage: Some(at.stage),
            reply_text: reply_text.map(|t| redact(&t)),
            ambiguous,
        }
    }

    /// The server refused this card's message for good (a 5xx to RCPT, DATA or the end of
    /// the message): sending the same card again fails the same way. A 5xx earlier in the
    /// conversation (greeting, EHLO, AUTH, MAIL) is about the relay or the sender, not the
    /// card: the card waits for the relay to be fixed.
    pub fn is_permanent(&self) -> bool {
        self.error_type == ErrorType::Permanent5xx
            && matches!(
                self.stage,
                Some(Stage::RcptTo | Stage::Data | Stage::EndOfData)
            )
    }

    /// A permanent rejection of the recipient (5.1.x at RCPT: bad mailbox, no such user, …).
    pub fn is_recipient_rejected(&self) -> bool {
        self.is_permanent()
            && self.stage == Some(Stage::RcptTo)
            && matches!(
                self.reply_text.as_deref().and_then(enhanced_status),
                Some((5, 1, _))
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified() {
        assert_eq!(
            classify_reply(535, "5.7.8 Authentication credentials invalid"),
            ErrorType::Auth
        );
        assert_eq!(
            classify_reply(530, "5.7.0 Authentication required"),
            ErrorType::Auth
        );
        assert_eq!(
            classify_reply(421, "4.7.0 Too many connections, slow down"),
            ErrorType::RateLimit
        );
        assert_eq!(
            classify_reply(450, "4.2.1 Rate limit exceeded"),
            ErrorType::RateLimit
        );
        assert_eq!(
            classify_reply(451, "4.7.1 Try again later"),
            ErrorType::RateLimit
        );
        assert_eq!(
            classify_reply(450, "4.2.1 Mailbox busy"),
            ErrorType::Transient4xx
        );
        assert_eq!(
            classify_reply(421, "Service not available"),
            ErrorType::Transient4xx
        );
        assert_eq!(
            classify_reply(550, "5.1.1 no such user"),
            ErrorType::Permanent5xx
        );
    }

    #[test]
    fn recipient_rejection_is_recognised_from_the_enhanced_status_at_rcpt() {
        let f = |stage: Stage, code: u16, text: &str| {
            SendFailure::from_smtp(
                smtp::Failure::Reply {
                    stage,
                    code,
                    text: text.into(),
                },
                "relay.example",
                25,
            )
        };
        assert!(f(Stage::RcptTo, 550, "5.1.1 no such user").is_recipient_rejected());
        assert!(!f(Stage::EndOfData, 554, "5.7.1 rejected as spam").is_recipient_rejected());
        assert!(f(Stage::EndOfData, 554, "5.7.1 rejected as spam").is_permanent());
        assert!(!f(Stage::RcptTo, 450, "4.1.1 x").is_recipient_rejected());
        // A 5xx before RCPT is about the relay or the sender, not the card.
        assert!(!f(Stage::MailFrom, 550, "5.1.8 bad sender").is_permanent());
        assert!(!f(Stage::Greeting, 554, "no service").is_permanent());
        assert_eq!(
            f(Stage::Auth, 504, "5.5.4 mechanism not supported").error_type,
            ErrorType::Auth
        );
    }

    #[test]
    fn failure_texts_say_once_what_failed_and_where() {
        let closed = SendFailure::from_smtp(
            smtp::Failure::Closed {
                stage: Stage::EndOfData,
            },
            "relay.example",
            25,
        );
        assert_eq!(closed.error_type, ErrorType::Connection);
        assert!(closed.ambiguous);
        assert_eq!(
            closed.message,
            "relay.example:25 closed the connection after the end of the message without answering; the message may have been delivered"
        );
        let refused = SendFailure::from_smtp(
            smtp::Failure::Io {
                stage: Stage::Connect,
                error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
            "relay.example",
            25,
        );
        assert_eq!(refused.error_type, ErrorType::Connection);
        assert!(!refused.ambiguous);
        assert_eq!(
            refused.message,
            "connecting to relay.example:25 failed: connection refused"
        );
        let reply = SendFailure::from_smtp(
            smtp::Failure::Reply {
                stage: Stage::RcptTo,
                code: 550,
                text: "5.1.1 no such user".into(),
            },
            "relay.example",
            25,
        );
        assert_eq!(
            reply.message,
            "relay.example:25 replied 550 5.1.1 no such user at RCPT TO"
        );
    }
}
