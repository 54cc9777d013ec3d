//! `doctor`'s SMTP check: reads `SMTP_URL`/`EMAIL_FROM` through
//! [`crate::email::MailerConfig`] (the same parsing the sender uses), then connects, says
//! EHLO, upgrades to TLS as configured, authenticates when the URL has credentials, sends
//! NOOP and QUIT. No message is ever sent.

use serde_json::json;

use super::{Check, Status};
use crate::email::{ErrorType, Mailer, MailerConfig, SendFailure, SmtpSecurity};
use crate::error::redact;

fn security_text(s: SmtpSecurity) -> &'static str {
    match s {
        SmtpSecurity::None => "plaintext",
        SmtpSecurity::Opportunistic => "STARTTLS when offered",
        SmtpSecurity::StartTls => "STARTTLS required",
        SmtpSecurity::Tls => "implicit TLS",
    }
}

const NAME: &str = "smtp";

pub async fn check() -> Check {
    let cfg = match configured() {
        Ok(cfg) => cfg,
        Err(check) => return check,
    };
    let target = format!("{}:{}", cfg.host, cfg.port);
    let details = json!({
        "configured": true,
        "host": cfg.host,
        "port": cfg.port,
        "security": cfg.security,
        "username": cfg.username,
        "from": cfg.from.to_string(),
    });
    let auth = cfg
        .username
        .as_deref()
        .map(|u| format!("authenticated as {u}"))
        .unwrap_or_else(|| "no credentials in SMTP_URL, AUTH not tried".to_string());
    let security = security_text(cfg.security);
    let timeout = cfg.timeout;
    let mailer = match Mailer::new(cfg) {
        Ok(m) => m,
        Err(e) => {
            return Check::new(
                NAME,
                Status::Fail,
                redact(&format!("{e:#}")),
                Some("fix SMTP_URL"),
                details,
            )
        }
    };
    // Connect, EHLO, STARTTLS, AUTH, QUIT: no message is sent.
    let probe = tokio::time::timeout(timeout, mailer.check()).await;
    match probe {
        Ok(Ok(())) => Check::new(
            NAME,
            Status::Ok,
            format!("{target} reachable ({security}), EHLO accepted, {auth}; no message sent"),
            None,
            details,
        ),
        Ok(Err(e)) => refused(&format!("{target} ({security})"), e, details),
        Err(_) => Check::new(
            NAME,
            Status::Fail,
            format!("{target} ({security}): no answer within {timeout:?}"),
            Some("check host, port and firewall, or raise SMTP_TIMEOUT_SECS"),
            details,
        ),
    }
}

/// The configuration to probe, or the check's verdict when there is none to probe.
fn configured() -> Result<MailerConfig, Check> {
    match MailerConfig::from_env() {
        Err(e) => Err(Check::new(
            NAME,
            Status::Fail,
            redact(&format!("{e:#}")),
            Some("fix SMTP_URL / EMAIL_FROM / SMTP_TIMEOUT_SECS (see docs/configuration.md)"),
            json!({"configured": false}),
        )),
        Ok(None) => Err(not_configured()),
        Ok(Some(cfg)) => Ok(cfg),
    }
}

/// Sending is off: say which of the two variables is missing.
fn not_configured() -> Check {
    let url = std::env::var("SMTP_URL").is_ok_and(|v| !v.trim().is_empty());
    let from = std::env::var("EMAIL_FROM").is_ok_and(|v| !v.trim().is_empty());
    let (summary, hint) = match (url, from) {
        (true, false) => (
            "SMTP_URL is set but EMAIL_FROM is not: e-mail sending is off",
            "set EMAIL_FROM to the sender address",
        ),
        (false, true) => (
            "EMAIL_FROM is set but SMTP_URL is not: e-mail sending is off",
            "set SMTP_URL, e.g. smtp://user:pass@relay:587?tls=starttls",
        ),
        _ => (
            "not configured (SMTP_URL, EMAIL_FROM): approved e-mail cards wait",
            "set SMTP_URL and EMAIL_FROM to let the agent send approved e-mails",
        ),
    };
    Check::new(
        NAME,
        Status::Warn,
        summary.to_string(),
        Some(hint),
        json!({"configured": false}),
    )
}

/// The relay answered but the session failed: a hint by the kind of failure.
fn refused(target: &str, e: SendFailure, details: serde_json::Value) -> Check {
    let kind = e.error_type;
    let hint = match kind {
        ErrorType::Auth => "the relay refused the credentials: fix the user and password in SMTP_URL",
        ErrorType::Timeout => "no answer in time: check host, port, firewall, or raise SMTP_TIMEOUT_SECS",
        ErrorType::Connection => "cannot reach or secure the connection: check host, port and TLS mode (smtp:// plaintext, ?tls=starttls, smtps:// implicit TLS) and that the relay's certificate is trusted (SMTP_CA_FILE)",
        _ => "the relay refused the session: see its reply",
    };
    Check::new(
        NAME,
        Status::Fail,
        format!("{target}: {} error: {}", kind.as_str(), redact(&e.message)),
        Some(hint),
        details,
    )
}
