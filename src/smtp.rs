//! The SMTP client conversation (RFC 5321) used to deliver one message: connect (plain or
//! implicit TLS), EHLO, STARTTLS, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA with dot-stuffing, QUIT,
//! and the TLS trust store of the relay.
//!
//! It exists so the *stage* of a failure is known exactly. At-most-once delivery (SPEC §5a)
//! hinges on one fact a general-purpose transport does not report: whether the final dot of
//! DATA had been written when the connection failed. Before it, nothing can have been
//! delivered and a retry is safe; after it, a timeout or a closed connection leaves the
//! outcome unknown (the relay may have queued the message) and the card must wait for a
//! person. [`Failure::after_final_dot`] answers that question.
//!
//! Trust: the relay's certificate is checked against the system trust store (the bundle
//! named by `SSL_CERT_FILE`, else the distribution's bundle; the compiled-in Mozilla roots
//! when the machine has none) plus the CA file given as `SMTP_CA_FILE`, for a relay whose
//! certificate comes from a company CA.
//!
//! This file holds the conversation (its stages, failures and the client); `wire` the
//! bytes on the connection (replies, commands, capabilities, dot-stuffing), `trust` the
//! trust store.

mod trust;
mod wire;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub use trust::{tls_config, TrustSources};
pub use wire::dot_stuff;
use wire::{expect, io_failure, Capabilities, NoSigPipe, Stream, Wire};

/// Where the conversation was when it ended. Ordered: a later stage compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    Connect = 0,
    /// TLS handshake (implicit TLS or after STARTTLS).
    Tls,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    /// The DATA command, up to its 354 reply.
    Data,
    /// Writing the message and the final dot.
    Body,
    /// The final dot has been written; waiting for the server's verdict.
    EndOfData,
    /// The server accepted the message; only QUIT remains.
    Accepted,
}

impl Stage {
    fn from_u8(v: u8) -> Stage {
        use Stage::*;
        [
            Connect, Tls, Greeting, Ehlo, StartTls, Auth, MailFrom, RcptTo, Data, Body, EndOfData,
            Accepted,
        ]
        .get(v as usize)
        .copied()
        .unwrap_or(Accepted)
    }

    /// Words for a message: "at RCPT TO", "after the end of the message", ….
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Connect => "while connecting",
            Stage::Tls => "during the TLS handshake",
            Stage::Greeting => "at the greeting",
            Stage::Ehlo => "at EHLO",
            Stage::StartTls => "at STARTTLS",
            Stage::Auth => "at AUTH",
            Stage::MailFrom => "at MAIL FROM",
            Stage::RcptTo => "at RCPT TO",
            Stage::Data => "at DATA",
            Stage::Body => "while sending the message",
            Stage::EndOfData => "after the end of the message",
            Stage::Accepted => "after the message was accepted",
        }
    }
}

/// Why a delivery failed, and at which stage.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with a 4xx/5xx reply (or an unexpected code).
    Reply {
        stage: Stage,
        code: u16,
        text: String,
    },
    /// The server closed the connection without a reply.
    Closed { stage: Stage },
    /// A network error (refused, reset, unreachable, name not resolved, …).
    Io { stage: Stage, error: std::io::Error },
    /// The TLS handshake failed (untrusted certificate, wrong name, no common protocol).
    Tls { stage: Stage, error: std::io::Error },
    /// The server's answer makes no sense or lacks what is needed (STARTTLS, an AUTH
    /// mechanism).
    Protocol { stage: Stage, detail: String },
    /// The whole transaction did not finish within the timeout.
    Timeout { stage: Stage, after: Duration },
}

impl Failure {
    pub fn stage(&self) -> Stage {
        match self {
            Failure::Reply { stage, .. }
            | Failure::Closed { stage }
            | Failure::Io { stage, .. }
            | Failure::Tls { stage, .. }
            | Failure::Protocol { stage, .. }
            | Failure::Timeout { stage, .. } => *stage,
        }
    }

    /// The final dot was written and no verdict came back: the message may have been
    /// delivered. Only a reply decides after the dot; anything else is ambiguous.
    pub fn after_final_dot(&self) -> bool {
        self.stage() >= Stage::EndOfData && !matches!(self, Failure::Reply { .. })
    }
}

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    None,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS required.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// Everything one delivery needs; cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The name given in EHLO.
    pub helo_name: String,
    pub credentials: Option<(String, String)>,
    /// Required unless `security` is `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound of the whole transaction, connect to the verdict on the final dot.
    pub timeout: Duration,
}

impl Client {
    /// Deliver `message` (CRLF line ends, not yet dot-stuffed) from `from` to `to`.
    pub async fn send(&self, from: &str, to: &[&str], message: &[u8]) -> Result<(), Failure> {
        let stage = AtomicU8::new(Stage::Connect as u8);
        match tokio::time::timeout(self.timeout, self.converse(&stage, from, to, message)).await {
            Ok(result) => result,
            Err(_) => {
                let at = Stage::from_u8(stage.load(Ordering::SeqCst));
                if at == Stage::Accepted {
                    // Only QUIT was pending: the message went out.
                    Ok(())
                } else {
                    Err(Failure::Timeout {
                        stage: at,
                        after: self.timeout,
                    })
                }
            }
        }
    }

    async fn tls_handshake(&self, tcp: TcpStream, stage: Stage) -> Result<Stream, Failure> {
        let config = self.tls.clone().ok_or_else(|| Failure::Protocol {
            stage,
            detail: "TLS requested but no TLS configuration".into(),
        })?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| Failure::Protocol {
            stage,
            detail: format!("'{}' is not a valid TLS server name: {e}", self.host),
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match connector.connect(name, NoSigPipe(tcp)).await {
            Ok(s) => Ok(Stream::Tls(Box::new(s))),
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                Err(Failure::Tls { stage, error })
            }
            Err(error) => Err(io_failure(stage, error)),
        }
    }

    /// Connect, EHLO, STARTTLS and AUTH as for a delivery, then QUIT without sending
    /// anything: whether the relay is reachable and accepts the credentials (for `doctor`).
    pub async fn check(&self) -> Result<(), Failure> {
        let stage = AtomicU8::new(Stage::Connect as u8);
        let session = async {
            let (mut wire, _) = self.open(&stage).await?;
            stage.store(Stage::Accepted as u8, Ordering::SeqCst);
            if wire.send_line(Stage::Accepted, "QUIT").await.is_ok() {
                let _ = wire.reply(Stage::Accepted).await;
            }
            Ok(())
        };
        match tokio::time::timeout(self.timeout, session).await {
            Ok(result) => result,
            Err(_) => match Stage::from_u8(stage.load(Ordering::SeqCst)) {
                Stage::Accepted => Ok(()),
                at => Err(Failure::Timeout {
                    stage: at,
                    after: self.timeout,
                }),
            },
        }
    }

    /// Up to an authenticated session ready for MAIL FROM.
    async fn open(&self, stage: &AtomicU8) -> Result<(Wire, Capabilities), Failure> {
        let at = |s: Stage| {
            stage.store(s as u8, Ordering::SeqCst);
            s
        };
        let s = at(Stage::Connect);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| Failure::Io { stage: s, error })?;
        let _ = tcp.set_nodelay(true);
        let stream = if self.security == Security::Implicit {
            self.tls_handshake(tcp, at(Stage::Tls)).await?
        } else {
            Stream::Plain(tcp)
        };
        let mut wire = Wire {
            stream,
            buf: Vec::new(),
        };

        let s = at(Stage::Greeting);
        expect(wire.reply(s).await?, s, 2)?;
        let s = at(Stage::Ehlo);
        let mut caps = Capabilities::from(
            &wire
                .command(s, &format!("EHLO {}", self.helo_name), 2)
                .await?,
        );

        let want_tls = match self.security {
            Security::StartTls => true,
            Security::Opportunistic => caps.starttls,
            Security::None | Security::Implicit => false,
        };
        if want_tls {
            caps = self.start_tls(&mut wire, &caps, stage).await?;
        }
        if let Some((user, pass)) = &self.credentials {
            authenticate(&mut wire, &caps, user, pass, at(Stage::Auth)).await?;
        }
        Ok((wire, caps))
    }

    /// STARTTLS, the handshake and EHLO again; the capabilities offered under TLS.
    async fn start_tls(
        &self,
        wire: &mut Wire,
        caps: &Capabilities,
        stage: &AtomicU8,
    ) -> Result<Capabilities, Failure> {
        let at = |s: Stage| {
            stage.store(s as u8, Ordering::SeqCst);
            s
        };
        let s = at(Stage::StartTls);
        if !caps.starttls {
            return Err(Failure::Protocol {
                stage: s,
                detail: "the server does not offer STARTTLS (SMTP_URL requires it)".into(),
            });
        }
        wire.command(s, "STARTTLS", 2).await?;
        if !wire.buf.is_empty() {
            // Bytes sent before the handshake would be trusted after it (CVE-2011-0411).
            return Err(Failure::Protocol {
                stage: s,
                detail: "the server sent data after its STARTTLS reply".into(),
            });
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut wire.stream, Stream::Gone) else {
            return Err(Failure::Protocol {
                stage: s,
                detail: "STARTTLS on an encrypted connection".into(),
            });
        };
        wire.stream = self.tls_handshake(tcp, at(Stage::Tls)).await?;
        let s = at(Stage::Ehlo);
        Ok(Capabilities::from(
            &wire
                .command(s, &format!("EHLO {}", self.helo_name), 2)
                .await?,
        ))
    }

    async fn converse(
        &self,
        stage: &AtomicU8,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<(), Failure> {
        let at = |s: Stage| {
            stage.store(s as u8, Ordering::SeqCst);
            s
        };
        let (mut wire, caps) = self.open(stage).await?;
        let s = at(Stage::MailFrom);
        let mut mail = format!("MAIL FROM:<{from}>");
        if caps.eight_bit && message.iter().any(|b| *b >= 0x80) {
            mail.push_str(" BODY=8BITMIME");
        }
        wire.command(s, &mail, 2).await?;
        let s = at(Stage::RcptTo);
        for rcpt in to {
            wire.command(s, &format!("RCPT TO:<{rcpt}>"), 2).await?;
        }
        let s = at(Stage::Data);
        wire.command(s, "DATA", 3).await?;

        let s = at(Stage::Body);
        wire.write_all(&dot_stuff(message))
            .await
            .map_err(|e| io_failure(s, e))?;
        wire.write_all(b".\r\n")
            .await
            .map_err(|e| io_failure(s, e))?;
        // From here on a lost connection leaves the outcome unknown.
        let s = at(Stage::EndOfData);
        expect(wire.reply(s).await?, s, 2)?;

        at(Stage::Accepted);
        // Politeness only: the message is accepted whatever happens to QUIT.
        if wire.send_line(Stage::Accepted, "QUIT").await.is_ok() {
            let _ = wire.reply(Stage::Accepted).await;
        }
        Ok(())
    }
}

/// AUTH PLAIN when offered, else AUTH LOGIN.
async fn authenticate(
    wire: &mut Wire,
    caps: &Capabilities,
    user: &str,
    pass: &str,
    s: Stage,
) -> Result<(), Failure> {
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    if caps.auth_plain {
        let token = b64(format!("\0{user}\0{pass}").as_bytes());
        wire.command(s, &format!("AUTH PLAIN {token}"), 2).await?;
    } else if caps.auth_login {
        wire.command(s, "AUTH LOGIN", 3).await?;
        wire.command(s, &b64(user.as_bytes()), 3).await?;
        wire.command(s, &b64(pass.as_bytes()), 2).await?;
    } else {
        return Err(Failure::Protocol {
            stage: s,
            detail: "the server offers neither AUTH PLAIN nor AUTH LOGIN".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failure_without_a_verdict_after_the_dot_is_ambiguous() {
        let closed = |stage| Failure::Closed { stage };
        assert!(closed(Stage::EndOfData).after_final_dot());
        assert!(!closed(Stage::Body).after_final_dot());
        assert!(Failure::Timeout {
            stage: Stage::EndOfData,
            after: Duration::from_secs(1)
        }
        .after_final_dot());
        assert!(!Failure::Reply {
            stage: Stage::EndOfData,
            code: 451,
            text: String::new()
        }
        .after_final_dot());
    }
}
