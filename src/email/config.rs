//! SMTP configuration from the environment: `SMTP_URL` (parsed here, the password
//! registered for redaction), `EMAIL_FROM`, `SMTP_TIMEOUT_SECS`, `SMTP_HELO_NAME`, and the
//! trust sources `SMTP_CA_FILE` and `SSL_CERT_FILE`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use lettre::message::Mailbox;
use serde::Serialize;

use crate::error::{register_secret, AppError};

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
        let Some((url, from)) = url_and_from(&var) else {
            return Ok(None);
        };
        let parsed = parse_smtp_url(&url)?;
        let from: Mailbox = from.parse().map_err(|e| {
            AppError::usage(format!("invalid EMAIL_FROM: not an e-mail address ({e})"))
        })?;
        let timeout = timeout_var(&var)?;
        let helo_name = helo_name_var(&var, &from)?;
        let ca_file = file_var(&var, "SMTP_CA_FILE")?;
        let ssl_cert_file = file_var(&var, "SSL_CERT_FILE")?;
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

/// `SMTP_URL` and `EMAIL_FROM`; None (sending off) unless both are set.
fn url_and_from(var: &impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    match (nonempty(var("SMTP_URL")), nonempty(var("EMAIL_FROM"))) {
        (Some(u), Some(f)) => Some((u, f)),
        (Some(u), None) => {
            // Parsed only to register its password for redaction.
            let _ = parse_smtp_url(&u);
            tracing::warn!("SMTP_URL is set but EMAIL_FROM is not: e-mail sending is off");
            None
        }
        (None, Some(_)) => {
            tracing::warn!("EMAIL_FROM is set but SMTP_URL is not: e-mail sending is off");
            None
        }
        (None, None) => None,
    }
}

/// `SMTP_TIMEOUT_SECS`: seconds in (0, 3600], 30 when unset.
fn timeout_var(var: &impl Fn(&str) -> Option<String>) -> Result<Duration> {
    let Some(t) = nonempty(var("SMTP_TIMEOUT_SECS")) else {
        return Ok(Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS));
    };
    let secs: f64 = t
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .ok_or_else(|| {
            AppError::usage(format!(
                "invalid SMTP_TIMEOUT_SECS '{t}': expected seconds between 0 and 3600"
            ))
        })?;
    Ok(Duration::from_secs_f64(secs))
}

/// `SMTP_HELO_NAME`, or the domain of `EMAIL_FROM`; either must be a valid EHLO name.
fn helo_name_var(var: &impl Fn(&str) -> Option<String>, from: &Mailbox) -> Result<String> {
    if let Some(name) = nonempty(var("SMTP_HELO_NAME")) {
        if !valid_helo_name(&name) {
            return Err(AppError::usage(format!(
                "invalid SMTP_HELO_NAME '{name}': expected a fully qualified domain name or an address literal like [192.0.2.1]"
            )));
        }
        return Ok(name);
    }
    let domain = from.email.domain().to_string();
    if !valid_helo_name(&domain) {
        return Err(AppError::usage(format!(
            "the domain of EMAIL_FROM ('{domain}') cannot be the EHLO name: set SMTP_HELO_NAME"
        )));
    }
    Ok(domain)
}

/// A variable naming a file that must exist when set.
fn file_var(var: &impl Fn(&str) -> Option<String>, key: &str) -> Result<Option<PathBuf>> {
    let Some(p) = nonempty(var(key)) else {
        return Ok(None);
    };
    let path = PathBuf::from(&p);
    if !path.is_file() {
        return Err(AppError::usage(format!(
            "{key} '{p}' is not a readable file"
        )));
    }
    Ok(Some(path))
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

fn bad(problem: &str) -> anyhow::Error {
    AppError::usage(format!("invalid SMTP_URL: {problem}"))
}

/// Parse `SMTP_URL`. Error messages never repeat the URL (it may hold the password).
fn parse_smtp_url(url: &str) -> Result<ParsedUrl> {
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
    // Before anything can fail on the rest: the password is registered for redaction.
    let (username, password) = userinfo.map(credentials).unwrap_or((None, None));
    let security = security(scheme, query)?;
    let (host, port) = host_port(hostport)?;
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

/// User and password from `user[:pass]` (percent-decoded; empty ones are None), the
/// password registered for redaction both raw and decoded.
fn credentials(u: &str) -> (Option<String>, Option<String>) {
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

/// The security from the scheme and the `tls=` parameter (the only one known).
fn security(scheme: &str, query: Option<&str>) -> Result<SmtpSecurity> {
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
    Ok(security)
}

/// Host and the port text, if any; an IPv6 host is written `[addr]`.
fn host_port(hostport: &str) -> Result<(String, Option<&str>)> {
    if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        return Ok((h.to_string(), after.strip_prefix(':')));
    }
    Ok(match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), Some(p)),
        None => (hostport.to_string(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::test_support::{cfg, vars};
    use crate::error::redact;

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
}
