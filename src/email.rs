//! E-mail delivery (SPEC §5a): sending approved `send_email` cards over SMTP at most once,
//! classifying provider failures, the per-tenant circuit breaker, and bounce suppression.
//! (Drafting the follow-up cards belongs to `engagement`.)
//!
//! Configuration comes from the environment: `SMTP_URL` and `EMAIL_FROM` (both needed;
//! without them nothing is sent and approved cards wait), optionally `SMTP_TIMEOUT_SECS`
//! (default 30, fractions allowed), `SMTP_HELO_NAME` (default: the domain of `EMAIL_FROM`),
//! `SMTP_CA_FILE` (CA certificates trusted besides the system store) and `SSL_CERT_FILE`
//! (the system bundle to use); see `smtp` for the trust store.
//!
//! `SMTP_URL` forms:
//! - `smtp://[user:pass@]host[:port]`: plaintext, no TLS at all (port 25). Only for a
//!   trusted relay next to the agent (a local MTA, a sidecar, the test server).
//! - `smtp://…?tls=starttls`: STARTTLS required (port 587 unless given);
//!   `?tls=opportunistic` upgrades when offered and falls back to plaintext.
//! - `smtps://[user:pass@]host[:port]`: implicit TLS (port 465), certificates verified.
//!
//! User and password are percent-decoded; the password is registered for redaction and
//! never appears in a message.
//!
//! At most once. A card is sent only after one statement moved it `approved → executing`
//! (a claim two senders cannot both win), and it leaves `executing` only once the outcome is
//! recorded. A crash between the SMTP transaction and that record leaves the card
//! `executing`; the next run does not send it again blindly but parks it (`blocked`,
//! `blocked_code = 'delivery_unknown'`), telling a human which Message-ID to look for in the
//! mailbox. A cycle holds the tenant's lease, so it parks every card it finds executing at
//! once (a sender whose lease was taken over is fenced out and records nothing); without a
//! lease only cards untouched for [`STUCK_AFTER_MINUTES`] count as stuck, so a sender never
//! parks a card another sender is still delivering. The same parking, with an
//! `email_delivery_unknown` alert, follows a conversation that failed after the final dot
//! of DATA (timeout, closed connection): the relay may have the message. Only a person
//! moves a parked card on (`autopilot card requeue|close`, module `cards`).
//!
//! Policies (SPEC §5) are evaluated per card before the claim; the policy takes one unit of
//! the hourly quota for an allowed send. When the claim then loses (another sender took
//! the card) the unit is given back in the same transaction, so concurrent senders together
//! send exactly the hourly limit, not fewer.
//!
//! Failures: each is a row of `email_provider_failures` (auth, rate_limit, 5xx, 4xx,
//! timeout, connection, other). A failure before the final dot is clean: transient ones
//! (4xx, timeout, connection), provider-side ones (auth, other) and a 5xx before RCPT (about
//! the relay or the sender, not this card) put the card back to `approved` for a later
//! cycle; a permanent 5xx to RCPT, DATA or the end of the message parks it in `blocked` with
//! the reply, and a 5.1.x recipient rejection also suppresses the address (reason `bounce`). Five failures of a tenant within 15 minutes
//! open the circuit: sending stops for the cycle and a critical `email_provider_failure`
//! alert is raised (deduplicated while unacknowledged by `raise_agent_alert`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::{check_fence, Fence};
use crate::error::{redact, register_secret, AppError};
use crate::policy::{Action, Quota, Violation};
use crate::settings::TenantSettings;
use crate::smtp::{self, Stage};

/// Failures of a tenant within this window that open the circuit breaker.
pub const CIRCUIT_FAILURES: i64 = 5;
pub const CIRCUIT_WINDOW_MINUTES: i64 = 15;
/// A card `executing` for longer than this was left by an interrupted send.
pub const STUCK_AFTER_MINUTES: i64 = 10;
/// Recorded as `email_provider_failures.provider`.
pub const PROVIDER: &str = "smtp";
const DEFAULT_TIMEOUT_SECS: f64 = 30.0;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// `smtp://`: plaintext.
    None,
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered.
    Opportunistic,
    /// `smtp://…?tls=starttls`: STARTTLS required.
    StartTls,
    /// `smtps://`: implicit TLS.
    Tls,
}

/// Where and as whom to send. The password is kept out of `Debug`.
#[derive(Clone)]
pub struct MailerConfig {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `EMAIL_FROM`: the From header and the envelope sender.
    pub from: Mailbox,
    /// Limit for one whole SMTP transaction (connect to end of DATA).
    pub timeout: Duration,
    /// `SMTP_HELO_NAME`: the name given in EHLO; defaults to the domain of `EMAIL_FROM`
    /// (relays refuse a bare host name).
    pub helo_name: String,
    /// `SMTP_CA_FILE`: PEM CA certificates trusted for the relay besides the system store.
    pub ca_file: Option<PathBuf>,
    /// `SSL_CERT_FILE`: the system CA bundle to use instead of the distribution's.
    pub ssl_cert_file: Option<PathBuf>,
}

impl std::fmt::Debug for MailerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailerConfig")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .field("helo_name", &self.helo_name)
            .field("ca_file", &self.ca_file)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .finish()
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl MailerConfig {
    /// From `SMTP_URL`, `EMAIL_FROM` and `SMTP_TIMEOUT_SECS`; None when either of the first
    /// two is missing (sending is off). A malformed value is a usage error naming it.
    pub fn from_env() -> Result<Option<MailerConfig>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`MailerConfig::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<MailerConfig>> {
        let url = nonempty(var("SMTP_URL"));
        let from = nonempty(var("EMAIL_FROM"));
        let (url, from) = match (url, from) {
            (Some(u), Some(f)) => (u, f),
            (Some(u), None) => {
                // Parsed only to register its password for redaction.
                let _ = parse_smtp_url(&u);
                tracing::warn!("SMTP_URL is set but EMAIL_FROM is not: e-mail sending is off");
                return Ok(None);
            }
            (None, Some(_)) => {
                tracing::warn!("EMAIL_FROM is set but SMTP_URL is not: e-mail sending is off");
                return Ok(None);
            }
            (None, None) => return Ok(None),
        };
        let parsed = parse_smtp_url(&url)?;
        let from: Mailbox = from.parse().map_err(|e| {
            AppError::usage(format!("invalid EMAIL_FROM: not an e-mail address ({e})"))
        })?;
        let timeout = match nonempty(var("SMTP_TIMEOUT_SECS")) {
            None => Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
            Some(t) => {
                let secs: f64 = t
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or_else(|| {
                        AppError::usage(format!(
                            "invalid SMTP_TIMEOUT_SECS '{t}': expected seconds between 0 and 3600"
                        ))
                    })?;
                Duration::from_secs_f64(secs)
            }
        };
        let helo_name = match nonempty(var("SMTP_HELO_NAME")) {
            Some(name) => {
                if !valid_helo_name(&name) {
                    return Err(AppError::usage(format!(
                        "invalid SMTP_HELO_NAME '{name}': expected a fully qualified domain name or an address literal like [192.0.2.1]"
                    )));
                }
                name
            }
            None => {
                let domain = from.email.domain().to_string();
                if !valid_helo_name(&domain) {
                    return Err(AppError::usage(format!(
                        "the domain of EMAIL_FROM ('{domain}') cannot be the EHLO name: set SMTP_HELO_NAME"
                    )));
                }
                domain
            }
        };
        let file = |key: &str| -> Result<Option<PathBuf>> {
            match nonempty(var(key)) {
                None => Ok(None),
                Some(p) => {
                    let path = PathBuf::from(&p);
                    if !path.is_file() {
                        return Err(AppError::usage(format!(
                            "{key} '{p}' is not a readable file"
                        )));
                    }
                    Ok(Some(path))
                }
            }
        };
        let ca_file = file("SMTP_CA_FILE")?;
        let ssl_cert_file = file("SSL_CERT_FILE")?;
        Ok(Some(MailerConfig {
            security: parsed.security,
            host: parsed.host,
            port: parsed.port,
            username: parsed.username,
            password: parsed.password,
            from,
            timeout,
            helo_name,
            ca_file,
            ssl_cert_file,
        }))
    }

    /// The domain of `EMAIL_FROM`, used for Message-IDs.
    pub fn from_domain(&self) -> &str {
        self.from.email.domain()
    }
}

/// A domain (letters, digits, hyphens, at least one dot) or an address literal.
fn valid_helo_name(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv4Addr>().is_ok()
            || inner
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

struct ParsedUrl {
    security: SmtpSecurity,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .to_string()
}

/// Parse `SMTP_URL`. Error messages never repeat the URL (it may hold the password).
fn parse_smtp_url(url: &str) -> Result<ParsedUrl> {
    let bad = |problem: &str| AppError::usage(format!("invalid SMTP_URL: {problem}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected smtp://[user:pass@]host[:port] or smtps://…"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (decode(user), Some(decode(pass))),
                None => (decode(u), None),
            };
            if let Some(p) = &pass {
                register_secret(p);
                register_secret(u.split_once(':').map(|(_, p)| p).unwrap_or(""));
            }
            (
                Some(user).filter(|u| !u.is_empty()),
                pass.filter(|p| !p.is_empty()),
            )
        }
    };
    let mut security = match scheme.to_ascii_lowercase().as_str() {
        "smtp" => SmtpSecurity::None,
        "smtps" => SmtpSecurity::Tls,
        _ => return Err(bad("the scheme must be smtp:// or smtps://")),
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("tls", v) if security != SmtpSecurity::Tls => {
                security = match v {
                    "starttls" | "required" => SmtpSecurity::StartTls,
                    "opportunistic" => SmtpSecurity::Opportunistic,
                    "none" => SmtpSecurity::None,
                    _ => return Err(bad("tls= must be starttls, opportunistic or none")),
                }
            }
            ("tls", _) => {
                return Err(bad(
                    "smtps:// always uses implicit TLS; drop the tls= parameter",
                ))
            }
            (k, _) => return Err(bad(&format!("unknown parameter '{k}' (known: tls)"))),
        }
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&format!("invalid port '{p}'")))?,
        None => match security {
            SmtpSecurity::None | SmtpSecurity::Opportunistic => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
        },
    };
    Ok(ParsedUrl {
        security,
        host,
        port,
        username,
        password,
    })
}

/// The SMTP client built from a [`MailerConfig`]. One connection per message (no pool):
/// an hourly agent sends a handful of messages, and a fresh connection per card keeps one
/// failure from poisoning the next.
#[derive(Clone)]
pub struct Mailer {
    cfg: MailerConfig,
    client: smtp::Client,
    trust: Option<smtp::TrustSources>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("cfg", &self.cfg).finish()
    }
}

impl Mailer {
    /// A bad trust setting (`SMTP_CA_FILE`, `SSL_CERT_FILE`) is a usage error naming it.
    pub fn new(cfg: MailerConfig) -> Result<Mailer> {
        let security = match cfg.security {
            SmtpSecurity::None => smtp::Security::None,
            SmtpSecurity::Opportunistic => smtp::Security::Opportunistic,
            SmtpSecurity::StartTls => smtp::Security::StartTls,
            SmtpSecurity::Tls => smtp::Security::Implicit,
        };
        let (tls, trust) = if security == smtp::Security::None {
            (None, None)
        } else {
            let (config, sources) =
                smtp::tls_config(cfg.ssl_cert_file.as_deref(), cfg.ca_file.as_deref())
                    .map_err(AppError::usage)?;
            (Some(config), Some(sources))
        };
        let client = smtp::Client {
            host: cfg.host.clone(),
            port: cfg.port,
            security,
            helo_name: cfg.helo_name.clone(),
            credentials: cfg
                .username
                .clone()
                .map(|u| (u, cfg.password.clone().unwrap_or_default())),
            tls,
            timeout: cfg.timeout,
        };
        Ok(Mailer { cfg, client, trust })
    }

    /// [`MailerConfig::from_env`] then [`Mailer::new`]; None when sending is not configured.
    pub fn from_env() -> Result<Option<Mailer>> {
        MailerConfig::from_env()?.map(Mailer::new).transpose()
    }

    pub fn config(&self) -> &MailerConfig {
        &self.cfg
    }

    /// Where the relay's trusted roots come from (None for a plaintext relay).
    pub fn trust_sources(&self) -> Option<&smtp::TrustSources> {
        self.trust.as_ref()
    }

    /// Reach the relay and authenticate (EHLO, STARTTLS, AUTH), send nothing, QUIT: for
    /// an operator's check. The failure is classified like a delivery's.
    pub async fn check(&self) -> std::result::Result<(), SendFailure> {
        self.client
            .check()
            .await
            .map_err(|f| SendFailure::from_smtp(f, &self.cfg.host, self.cfg.port))
    }

    /// One SMTP transaction, bounded by the configured timeout as a whole.
    pub async fn deliver(&self, message: Message) -> std::result::Result<(), SendFailure> {
        let envelope = message.envelope();
        let from = envelope
            .from()
            .map(|a| a.to_string())
            .unwrap_or_else(|| self.cfg.from.email.to_string());
        let to: Vec<String> = envelope.to().iter().map(|a| a.to_string()).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        self.client
            .send(&from, &to, &message.formatted())
            .await
            .map_err(|f| SendFailure::from_smtp(f, &self.cfg.host, self.cfg.port))
    }
}

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

impl SendFailure {
    /// A failure before any conversation (the message could not be built).
    fn local(message: String) -> SendFailure {
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
        let stage = f.stage();
        let ambiguous = f.after_final_dot();
        let unknown = if ambiguous {
            "; the message may have been delivered"
        } else {
            ""
        };
        let (error_type, smtp_code, reply_text, message) = match f {
            smtp::Failure::Reply { code, text, .. } => {
                let error_type = if stage == Stage::Auth && code >= 500 {
                    ErrorType::Auth
                } else {
                    classify_reply(code, &text)
                };
                let reply = if text.is_empty() {
                    code.to_string()
                } else {
                    format!("{code} {text}")
                };
                let message = format!("{host}:{port} replied {reply} {}", stage.describe());
                (error_type, Some(code), Some(text), message)
            }
            smtp::Failure::Closed { .. } => (
                ErrorType::Connection,
                None,
                None,
                format!(
                    "{host}:{port} closed the connection {} without answering{unknown}",
                    stage.describe()
                ),
            ),
            smtp::Failure::Io { error, .. } => {
                let error_type = if error.kind() == std::io::ErrorKind::TimedOut {
                    ErrorType::Timeout
                } else {
                    ErrorType::Connection
                };
                let message = if stage == Stage::Connect {
                    format!("connecting to {host}:{port} failed: {error}")
                } else {
                    format!(
                        "network error with {host}:{port} {}: {error}{unknown}",
                        stage.describe()
                    )
                };
                (error_type, None, None, message)
            }
            smtp::Failure::Tls { error, .. } => (
                ErrorType::Connection,
                None,
                None,
                format!("TLS handshake with {host}:{port} failed: {error}"),
            ),
            smtp::Failure::Protocol { detail, .. } => {
                let error_type = match stage {
                    Stage::Auth => ErrorType::Auth,
                    Stage::StartTls | Stage::Tls => ErrorType::Connection,
                    _ => ErrorType::Other,
                };
                (
                    error_type,
                    None,
                    None,
                    format!("{host}:{port} {}: {detail}{unknown}", stage.describe()),
                )
            }
            smtp::Failure::Timeout { after, .. } => (
                ErrorType::Timeout,
                None,
                None,
                format!(
                    "no answer from {host}:{port} within {} s {}{unknown}",
                    after.as_secs_f64(),
                    stage.describe()
                ),
            ),
        };
        SendFailure {
            error_type,
            smtp_code,
            message: redact(&message),
            stage: Some(stage),
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

/// What one call of [`send_approved`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendReport {
    /// Cards considered (approved `send_email` cards loaded, up to the limit).
    pub actions_planned: u64,
    /// SMTP transactions started (successful claims).
    pub attempted: u64,
    pub sent: u64,
    /// Cards moved to `blocked` by a policy (see `blocks`).
    pub blocked: u64,
    /// Cards left `approved` because the hourly quota was used up.
    pub deferred_rate_limited: u64,
    /// Failed SMTP transactions (each one an `email_provider_failures` row).
    pub failed: u64,
    /// Cards whose payload cannot be sent (no or bad `to`, no subject or body): `blocked`.
    pub invalid: u64,
    /// Sending is not configured (SMTP_URL/EMAIL_FROM): approved cards wait.
    pub provider_missing: bool,
    /// Too many recent provider failures: sending stopped for this cycle.
    pub circuit_open: bool,
    /// Cards found `executing` from an interrupted send, parked in `blocked`
    /// (`delivery_unknown`).
    pub recovered_stuck: u64,
    /// Cards whose SMTP transaction failed after the final dot of DATA (timeout, closed
    /// connection): the message may have been delivered, so they were parked in `blocked`
    /// with `blocked_code = 'delivery_unknown'` instead of being retried.
    pub delivery_unknown: u64,
    /// The tenant's cards parked with `delivery_unknown` after this call (this call's and
    /// earlier ones), waiting for a person to run `autopilot card requeue|close`.
    pub awaiting_person: u64,
    /// Every recorded policy violation, by card (a rate-limit block included).
    pub blocks: Vec<(Uuid, Violation)>,
}

const RECOVER_STUCK: &str = "UPDATE public.kanban_cards
   SET state = 'blocked', blocked_code = 'delivery_unknown',
       blocked_reason = 'delivery unknown: found executing after an interrupted send; check the mailbox for Message-ID '
                        || coalesce(message_id, '(unknown)')
                        || ', then run autopilot card requeue ' || id || ' (not delivered) or autopilot card close ' || id || ' (delivered)',
       updated_at = $2
 WHERE tenant_id = $1 AND type = 'send_email' AND state = 'executing' AND updated_at < $3
 RETURNING id, message_id";

/// The send failed after the final dot of DATA: park the card for a person, keeping its
/// Message-ID (the one to look for in the mailbox).
const PARK_DELIVERY_UNKNOWN: &str = "UPDATE public.kanban_cards
   SET state = 'blocked', blocked_code = 'delivery_unknown', blocked_reason = $2, updated_at = $3
 WHERE id = $1 AND state = 'executing'";

const COUNT_AWAITING: &str = "SELECT count(*) FROM public.kanban_cards
 WHERE tenant_id = $1 AND state = 'blocked' AND blocked_code = 'delivery_unknown'";

/// Alert type raised when a card is parked because its delivery is unknown.
pub const DELIVERY_UNKNOWN_ALERT: &str = "email_delivery_unknown";
/// `kanban_cards.blocked_code` of a card whose e-mail may or may not have been delivered.
pub const DELIVERY_UNKNOWN: &str = "delivery_unknown";

const LOAD_APPROVED: &str = "SELECT id, client_id, contact_id, action_payload
  FROM public.kanban_cards
 WHERE tenant_id = $1 AND type = 'send_email' AND state = 'approved'
 ORDER BY created_at, id
 LIMIT $2";

const RECENT_FAILURES: &str = "SELECT count(*) FROM public.email_provider_failures
 WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3";

const CLAIM: &str = "UPDATE public.kanban_cards
   SET state = 'executing', message_id = $2, updated_at = $3
 WHERE id = $1 AND state = 'approved'
 RETURNING id";

/// A quota unit taken for a card another sender claimed first goes back (same UTC hour
/// window as `rate_limit_take`).
const GIVE_BACK_QUOTA: &str = "UPDATE public.agent_rate_limits
   SET action_count = action_count - 1
 WHERE tenant_id = $1 AND action_type = $2
   AND window_start = date_trunc('hour', $3::timestamptz, 'UTC') AND action_count > 0";

// A card parked meanwhile as stuck was in fact sent: `done` is the truth.
const MARK_DONE: &str = "UPDATE public.kanban_cards
   SET state = 'done', executed_at = $2, updated_at = $2, blocked_reason = NULL, blocked_code = NULL
 WHERE id = $1 AND state IN ('executing', 'blocked')";

const TOUCH_CLOCK: &str = "SELECT public.touch_engagement_clock($1, $2, $3, 'email', NULL, $4)";

const BLOCK_CARD: &str = "UPDATE public.kanban_cards
   SET state = 'blocked', blocked_reason = $2, updated_at = $3
 WHERE id = $1 AND state IN ('approved', 'executing')";

const RETURN_TO_APPROVED: &str = "UPDATE public.kanban_cards
   SET state = 'approved', updated_at = $2
 WHERE id = $1 AND state = 'executing'";

const INSERT_FAILURE: &str = "INSERT INTO public.email_provider_failures
  (tenant_id, error_type, error_message, smtp_code, card_id, provider, created_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7)";

const SUPPRESS_BOUNCE: &str =
    "INSERT INTO public.email_suppressions (tenant_id, email, reason, created_at)
SELECT $1, lower($2), 'bounce', $3
 WHERE NOT EXISTS (SELECT 1 FROM public.email_suppressions s
                    WHERE s.tenant_id = $1 AND lower(s.email) = lower($2))";

const RAISE_ALERT: &str =
    "SELECT * FROM public.raise_agent_alert($1, 'email_provider_failure', 'critical', $2, $3, $4)";

const FAILURES_LAST_HOUR: &str = "SELECT count(*) FROM public.email_provider_failures
 WHERE tenant_id = $1 AND created_at > $2::timestamptz - interval '1 hour' AND created_at <= $2";

const COUNT_AWAITING_BY_TENANT: &str = "SELECT tenant_id, count(*) FROM public.kanban_cards
 WHERE tenant_id = ANY($1) AND state = 'blocked' AND blocked_code = 'delivery_unknown'
 GROUP BY tenant_id";

/// Per tenant, the cards parked with delivery unknown (for `status`).
pub async fn delivery_unknown_counts(
    c: &impl crate::db::Sql,
    tenants: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, i64>> {
    let rows = c
        .query(COUNT_AWAITING_BY_TENANT, &[&tenants])
        .await
        .context("counting cards parked with delivery unknown")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Provider failures of the tenant in the hour before `now` (the cycle's React phase).
pub async fn provider_failures_last_hour(
    c: &impl crate::db::Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<i64> {
    Ok(c.query_one(FAILURES_LAST_HOUR, &[&tenant, &now])
        .await
        .context("counting e-mail provider failures")?
        .get(0))
}

async fn recent_failures(c: &impl crate::db::Sql, tenant: Uuid, now: DateTime<Utc>) -> Result<i64> {
    let since = now - chrono::Duration::minutes(CIRCUIT_WINDOW_MINUTES);
    Ok(c.query_one(RECENT_FAILURES, &[&tenant, &since, &now])
        .await
        .context("counting recent e-mail provider failures")?
        .get(0))
}

async fn raise_circuit_alert(
    c: &mut impl crate::db::Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    failures: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    let message = format!(
        "{failures} e-mail provider failures within {CIRCUIT_WINDOW_MINUTES} minutes: sending is paused; check the SMTP provider"
    );
    let metadata = json!({
        "failures": failures,
        "window_minutes": CIRCUIT_WINDOW_MINUTES,
        "threshold": CIRCUIT_FAILURES,
        "provider": PROVIDER,
        "run_id": run_id,
    });
    let tx = c.begin().await.context("starting the alert transaction")?;
    check_fence(fence, &tx).await?;
    tx.query(RAISE_ALERT, &[&tenant, &message, &metadata, &now])
        .await
        .context("raising the e-mail provider alert")?;
    tx.commit().await.context("committing the alert")?;
    Ok(())
}

/// Raise (or count another occurrence of) the tenant's `email_delivery_unknown` alert for
/// parked cards, inside the caller's transaction. Deduplicated while unacknowledged.
async fn raise_delivery_unknown_alert(
    tx: &impl crate::db::Sql,
    tenant: Uuid,
    run_id: Option<Uuid>,
    parked: &[(Uuid, Option<String>)],
    now: DateTime<Utc>,
) -> Result<()> {
    let waiting: i64 = tx
        .query_one(COUNT_AWAITING, &[&tenant])
        .await
        .context("counting cards parked with delivery unknown")?
        .get(0);
    let cards: Vec<Value> = parked
        .iter()
        .map(|(id, mid)| json!({"card_id": id, "message_id": mid}))
        .collect();
    let message = format!(
        "{waiting} e-mail card(s) parked with delivery unknown: the mail server may have delivered them. \
         Check the mailbox for each card's Message-ID, then run `autopilot card requeue CARD_ID` (not delivered) \
         or `autopilot card close CARD_ID` (delivered)"
    );
    crate::alerts::raise(
        tx,
        tenant,
        DELIVERY_UNKNOWN_ALERT,
        "warning",
        &message,
        json!({"parked_cards": waiting, "cards": cards, "run_id": run_id}),
        now,
    )
    .await?;
    Ok(())
}

/// Send the tenant's approved `send_email` cards (oldest first, at most `limit`), each at
/// most once. See the module documentation for the flow and the failure handling.
#[allow(clippy::too_many_arguments)]
pub async fn send_approved(
    c: &mut impl crate::db::Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    settings: &TenantSettings,
    mailer: Option<&Mailer>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    let mut report = send_cards(c, tenant, run_id, fence, settings, mailer, limit, now).await?;
    report.awaiting_person = c
        .query_one(COUNT_AWAITING, &[&tenant])
        .await
        .context("counting cards parked with delivery unknown")?
        .get::<_, i64>(0)
        .max(0) as u64;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn send_cards(
    c: &mut impl crate::db::Begin,
    tenant: Uuid,
    run_id: Option<Uuid>,
    fence: Option<&Fence>,
    settings: &TenantSettings,
    mailer: Option<&Mailer>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<SendReport> {
    let mut report = SendReport::default();

    // a. Cards left executing by an interrupted send: park them for a human, never resend.
    {
        // Under the tenant's lease no other sender of this tenant can be delivering (a sender
        // whose lease was taken over can no longer record anything), so every card found
        // executing belongs to an interrupted send: park it now, not after a wait, so nothing
        // stays executing beyond one lease. Without a fence keep the grace period.
        let stuck_before = match fence {
            Some(_) => DateTime::<Utc>::MAX_UTC,
            None => now - chrono::Duration::minutes(STUCK_AFTER_MINUTES),
        };
        let tx = c
            .begin()
            .await
            .context("starting the recovery transaction")?;
        check_fence(fence, &tx).await?;
        let rows = tx
            .query(RECOVER_STUCK, &[&tenant, &now, &stuck_before])
            .await
            .context("parking cards left executing")?;
        if !rows.is_empty() {
            let parked: Vec<(Uuid, Option<String>)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            raise_delivery_unknown_alert(&tx, tenant, run_id, &parked, now).await?;
        }
        tx.commit().await.context("committing the recovery")?;
        report.recovered_stuck = rows.len() as u64;
        for r in &rows {
            let id: Uuid = r.get(0);
            tracing::warn!(%tenant, card = %id, "send_email card found executing after an interrupted send: blocked for review");
        }
    }

    // b. No provider: approved cards wait; the caller names the missing provider.
    let Some(mailer) = mailer else {
        report.provider_missing = true;
        return Ok(report);
    };

    // c. Circuit breaker.
    let failures = recent_failures(c, tenant, now).await?;
    if failures >= CIRCUIT_FAILURES {
        report.circuit_open = true;
        raise_circuit_alert(c, tenant, run_id, fence, failures, now).await?;
        return Ok(report);
    }

    // d. The cards.
    let rows = c
        .query(LOAD_APPROVED, &[&tenant, &limit.max(0)])
        .await
        .context("loading approved send_email cards")?;
    report.actions_planned = rows.len() as u64;
    let domain = mailer.config().from_domain().to_string();

    for (index, row) in rows.iter().enumerate() {
        let id: Uuid = row.get(0);
        let client_id: Option<Uuid> = row.get(1);
        let contact_id: Option<Uuid> = row.get(2);
        let payload: Value = row.get(3);

        let card = match CardToSend::from_payload(id, client_id, contact_id, payload) {
            Ok(card) => card,
            Err(problem) => {
                let tx = c.begin().await.context("starting a card transaction")?;
                check_fence(fence, &tx).await?;
                tx.execute(BLOCK_CARD, &[&id, &format!("cannot send: {problem}"), &now])
                    .await
                    .context("blocking an invalid send_email card")?;
                tx.commit().await.context("committing the blocked card")?;
                report.invalid += 1;
                continue;
            }
        };

        let mut action = Action::new("send_email", card.payload.clone());
        action.recipient_email = Some(card.to.clone());
        action.recipient_contact = card.contact_id;
        action.quota = Some(Quota::EmailSend);
        // Outside any transaction: the suppression check fails closed on a query error,
        // which would abort a surrounding transaction.
        let verdict = crate::policy::evaluate(&*c, tenant, settings, &action, now).await?;

        if let Some(block) = verdict {
            let tx = c.begin().await.context("starting a card transaction")?;
            check_fence(fence, &tx).await?;
            crate::policy::record(&tx, tenant, run_id, &action, &block, now).await?;
            if block.violation != Violation::RateLimit {
                tx.execute(BLOCK_CARD, &[&id, &block.reason, &now])
                    .await
                    .context("blocking a send_email card")?;
            }
            tx.commit().await.context("committing the policy block")?;
            report.blocks.push((id, block.violation));
            if block.violation == Violation::RateLimit {
                // The rest would be refused too: they stay approved for the next hour.
                report.deferred_rate_limited = (rows.len() - index) as u64;
                break;
            }
            report.blocked += 1;
            continue;
        }

        // Claim: approved → executing in one statement; only the winner sends.
        let message_id = message_id_for(id, &domain);
        let claimed = {
            let tx = c.begin().await.context("starting the claim transaction")?;
            check_fence(fence, &tx).await?;
            let won = tx
                .query_opt(CLAIM, &[&id, &message_id, &now])
                .await
                .context("claiming a send_email card")?
                .is_some();
            if !won {
                tx.execute(
                    GIVE_BACK_QUOTA,
                    &[&tenant, &Quota::EmailSend.action_type(), &now],
                )
                .await
                .context("giving back an unused e-mail quota unit")?;
            }
            tx.commit().await.context("committing the claim")?;
            won
        };
        if !claimed {
            continue;
        }
        report.attempted += 1;

        let outcome = match build_message(mailer.config(), tenant, &card, settings, now) {
            Ok(message) => mailer.deliver(message).await,
            Err(e) => Err(SendFailure::local(redact(&format!("{e:#}")))),
        };

        match outcome {
            Ok(()) => {
                let tx = c.begin().await.context("starting the sent transaction")?;
                check_fence(fence, &tx).await?;
                tx.execute(MARK_DONE, &[&id, &now])
                    .await
                    .context("marking a sent card done")?;
                if card.contact_id.is_some() || card.client_id.is_some() {
                    // touched_by NULL: the agent made this touch (defect 9).
                    tx.query_one(
                        TOUCH_CLOCK,
                        &[&tenant, &card.client_id, &card.contact_id, &now],
                    )
                    .await
                    .context("resetting the engagement clock after a send")?;
                }
                tx.commit().await.context("committing the sent card")?;
                report.sent += 1;
                tracing::info!(%tenant, card = %id, message_id = %message_id, "e-mail sent");
            }
            Err(failure) => {
                report.failed += 1;
                tracing::warn!(%tenant, card = %id, error_type = failure.error_type.as_str(),
                    smtp_code = ?failure.smtp_code, error = %failure.message, "e-mail send failed");
                let tx = c
                    .begin()
                    .await
                    .context("starting the failure transaction")?;
                check_fence(fence, &tx).await?;
                let code = failure.smtp_code.map(i32::from);
                tx.execute(
                    INSERT_FAILURE,
                    &[
                        &tenant,
                        &failure.error_type.as_str(),
                        &failure.message,
                        &code,
                        &id,
                        &PROVIDER,
                        &now,
                    ],
                )
                .await
                .context("recording an e-mail provider failure")?;
                if failure.ambiguous {
                    let reason = format!(
                        "delivery unknown: {}. Check the mailbox for Message-ID {message_id}, then run \
                         autopilot card requeue {id} (not delivered) or autopilot card close {id} (delivered)",
                        failure.message
                    );
                    tx.execute(PARK_DELIVERY_UNKNOWN, &[&id, &reason, &now])
                        .await
                        .context("parking a card whose delivery is unknown")?;
                    raise_delivery_unknown_alert(
                        &tx,
                        tenant,
                        run_id,
                        &[(id, Some(message_id.clone()))],
                        now,
                    )
                    .await?;
                    report.delivery_unknown += 1;
                    tracing::error!(%tenant, card = %id, message_id = %message_id,
                        "delivery unknown after the end of the message: card parked for a person");
                } else if failure.is_permanent() {
                    let reason = format!(
                        "the mail server refused the message permanently: {}",
                        failure.message
                    );
                    tx.execute(BLOCK_CARD, &[&id, &reason, &now])
                        .await
                        .context("blocking a rejected card")?;
                    if failure.is_recipient_rejected() {
                        tx.execute(SUPPRESS_BOUNCE, &[&tenant, &card.to, &now])
                            .await
                            .context("suppressing a bounced address")?;
                    }
                } else {
                    tx.execute(RETURN_TO_APPROVED, &[&id, &now])
                        .await
                        .context("returning a card to approved after a transient failure")?;
                }
                tx.commit().await.context("committing the failure")?;

                let failures = recent_failures(c, tenant, now).await?;
                if failures >= CIRCUIT_FAILURES {
                    report.circuit_open = true;
                    raise_circuit_alert(c, tenant, run_id, fence, failures, now).await?;
                    break;
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            owned
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        }
    }

    fn cfg() -> MailerConfig {
        MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
            ("EMAIL_FROM", "Agent <agent@amc.example>"),
        ]))
        .unwrap()
        .unwrap()
    }

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
    fn missing_url_or_from_means_no_provider() {
        assert!(MailerConfig::from_vars(vars(&[])).unwrap().is_none());
        assert!(MailerConfig::from_vars(vars(&[("SMTP_URL", "smtp://h")]))
            .unwrap()
            .is_none());
        assert!(
            MailerConfig::from_vars(vars(&[("EMAIL_FROM", "a@b.example")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn smtp_url_forms_and_default_ports() {
        let c = |url: &str| {
            MailerConfig::from_vars(vars(&[("SMTP_URL", url), ("EMAIL_FROM", "a@b.example")]))
                .unwrap()
                .unwrap()
        };
        let plain = c("smtp://mail.example");
        assert_eq!(
            (plain.security, plain.port, plain.username.clone()),
            (SmtpSecurity::None, 25, None)
        );
        let tls = c("smtps://u%40x:p%3Ass@mail.example");
        assert_eq!((tls.security, tls.port), (SmtpSecurity::Tls, 465));
        assert_eq!(tls.username.as_deref(), Some("u@x"));
        assert_eq!(tls.password.as_deref(), Some("p:ss"));
        let st = c("smtp://mail.example:2587?tls=starttls");
        assert_eq!((st.security, st.port), (SmtpSecurity::StartTls, 2587));
        assert_eq!(c("smtp://[::1]:26").host, "::1");
        assert_eq!(c("smtp://h/").port, 25);
    }

    #[test]
    fn malformed_smtp_url_is_a_usage_error_without_the_password() {
        for url in [
            "http://u:hunter22@h",
            "smtp://u:hunter22@h:notaport",
            "smtp://u:hunter22@",
            "smtp://u:hunter22@h?x=1",
        ] {
            let e =
                MailerConfig::from_vars(vars(&[("SMTP_URL", url), ("EMAIL_FROM", "a@b.example")]))
                    .unwrap_err();
            assert_eq!(crate::error::exit_code_for(&e), 2, "{url}");
            let text = e.to_string();
            assert!(text.contains("SMTP_URL"), "{text}");
            assert!(!text.contains("hunter22"), "{text}");
        }
        let cfg = MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://u:hunter22@h"),
            ("EMAIL_FROM", "a@b.example"),
        ]))
        .unwrap()
        .unwrap();
        assert!(!format!("{cfg:?}").contains("hunter22"));
        assert_eq!(redact("login hunter22 failed"), "login *** failed");
    }

    #[test]
    fn malformed_email_from_and_timeout_are_usage_errors() {
        let e = MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://h"),
            ("EMAIL_FROM", "not an address"),
        ]))
        .unwrap_err();
        assert_eq!(crate::error::exit_code_for(&e), 2);
        assert!(e.to_string().contains("EMAIL_FROM"));
        let e = MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://h"),
            ("EMAIL_FROM", "a@b.example"),
            ("SMTP_TIMEOUT_SECS", "-1"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("SMTP_TIMEOUT_SECS"));
        let ok = MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://h"),
            ("EMAIL_FROM", "a@b.example"),
            ("SMTP_TIMEOUT_SECS", "0.5"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(ok.timeout, Duration::from_millis(500));
    }

    #[test]
    fn tls_transports_can_be_built() {
        for url in [
            "smtps://u:p@mail.example",
            "smtp://mail.example?tls=starttls",
            "smtp://mail.example?tls=opportunistic",
        ] {
            let cfg =
                MailerConfig::from_vars(vars(&[("SMTP_URL", url), ("EMAIL_FROM", "a@b.example")]))
                    .unwrap()
                    .unwrap();
            Mailer::new(cfg).unwrap();
        }
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

    #[test]
    fn ehlo_name_defaults_to_the_sender_domain_and_can_be_set() {
        assert_eq!(cfg().helo_name, "amc.example");
        let set = MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtp://h"),
            ("EMAIL_FROM", "a@b.example"),
            ("SMTP_HELO_NAME", "agent-7.mail.b.example"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(set.helo_name, "agent-7.mail.b.example");
        for bad in ["vm", "bad name.example", "-x.example", "[999.1.1.1]"] {
            let e = MailerConfig::from_vars(vars(&[
                ("SMTP_URL", "smtp://h"),
                ("EMAIL_FROM", "a@b.example"),
                ("SMTP_HELO_NAME", bad),
            ]))
            .unwrap_err();
            assert_eq!(crate::error::exit_code_for(&e), 2, "{bad}");
            assert!(e.to_string().contains("SMTP_HELO_NAME"), "{e}");
        }
        assert!(valid_helo_name("[192.0.2.1]"));
        assert!(valid_helo_name("[IPv6:2001:db8::1]"));
    }

    #[test]
    fn unreadable_ca_files_are_usage_errors_naming_the_variable() {
        for key in ["SMTP_CA_FILE", "SSL_CERT_FILE"] {
            let e = MailerConfig::from_vars(vars(&[
                ("SMTP_URL", "smtps://h"),
                ("EMAIL_FROM", "a@b.example"),
                (key, "/nonexistent/ca.pem"),
            ]))
            .unwrap_err();
            assert_eq!(crate::error::exit_code_for(&e), 2);
            assert!(e.to_string().contains(key), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("ap-ca-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let cfg = MailerConfig::from_vars(vars(&[
            ("SMTP_URL", "smtps://h"),
            ("EMAIL_FROM", "a@b.example"),
            ("SMTP_CA_FILE", empty.to_str().unwrap()),
        ]))
        .unwrap()
        .unwrap();
        let e = Mailer::new(cfg).unwrap_err();
        assert_eq!(crate::error::exit_code_for(&e), 2);
        assert!(e.to_string().contains("SMTP_CA_FILE"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
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
