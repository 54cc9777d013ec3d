//! The SMTP client built from a [`MailerConfig`](super::MailerConfig): its trust store,
//! the operator's check, and one delivery per message.

use anyhow::Result;
use lettre::Message;

use super::{MailerConfig, SendFailure, SmtpSecurity};
use crate::error::AppError;
use crate::smtp;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::test_support::vars;
    use uuid::Uuid;

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
}
