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

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

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

/// A TCP stream whose vectored writes go through `send(2)` one buffer at a time. `writev`
/// (which a TLS stream may use) takes no MSG_NOSIGNAL flag, so a write that meets EPIPE on a
/// connection the relay closed would raise SIGPIPE, and the binary restores SIGPIPE's
/// default action (the process would end).
struct NoSigPipe(TcpStream);

impl AsyncRead for NoSigPipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for NoSigPipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<NoSigPipe>>),
    /// Transient, while upgrading.
    Gone,
}

/// A connection with its read buffer (replies are read line by line).
struct Wire {
    stream: Stream,
    buf: Vec<u8>,
}

const MAX_REPLY_BYTES: usize = 64 * 1024;

impl Wire {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk).await?,
            Stream::Tls(s) => s.read(&mut chunk).await?,
            Stream::Gone => return Err(std::io::ErrorKind::NotConnected.into()),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One reply (all its lines). `Closed` when the server hung up first.
    async fn reply(&mut self, stage: Stage) -> Result<Reply, Failure> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let Some(end) = self.buf.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > MAX_REPLY_BYTES {
                    return Err(Failure::Protocol {
                        stage,
                        detail: "the server's reply is too long".into(),
                    });
                }
                match self.read_more().await {
                    Ok(0) => return Err(Failure::Closed { stage }),
                    Ok(_) => continue,
                    Err(e) if is_closed(&e) => return Err(Failure::Closed { stage }),
                    Err(error) => return Err(Failure::Io { stage, error }),
                }
            };
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| Failure::Protocol {
                    stage,
                    detail: format!("malformed reply line {:?}", truncate(&line, 80)),
                })?;
            let sep = line.as_bytes().get(3).copied();
            lines.push(line.get(4..).unwrap_or("").to_string());
            match sep {
                Some(b'-') => {
                    if lines.len() > 256 {
                        return Err(Failure::Protocol {
                            stage,
                            detail: "the server's reply has too many lines".into(),
                        });
                    }
                }
                None | Some(b' ') => return Ok(Reply { code, lines }),
                Some(_) => {
                    return Err(Failure::Protocol {
                        stage,
                        detail: format!("malformed reply line {:?}", truncate(&line, 80)),
                    })
                }
            }
        }
    }

    async fn send_line(&mut self, stage: Stage, line: &str) -> Result<(), Failure> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write_all(&bytes)
            .await
            .map_err(|e| io_failure(stage, e))
    }

    /// Send a command and require a reply of class `want` (2 or 3).
    async fn command(&mut self, stage: Stage, line: &str, want: u16) -> Result<Reply, Failure> {
        self.send_line(stage, line).await?;
        expect(self.reply(stage).await?, stage, want)
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
    )
}

fn io_failure(stage: Stage, error: std::io::Error) -> Failure {
    if is_closed(&error) {
        Failure::Closed { stage }
    } else {
        Failure::Io { stage, error }
    }
}

struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" ").trim().to_string()
    }
}

fn expect(r: Reply, stage: Stage, class: u16) -> Result<Reply, Failure> {
    if r.code / 100 == class {
        Ok(r)
    } else {
        Err(Failure::Reply {
            stage,
            code: r.code,
            text: r.text(),
        })
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
            caps = Capabilities::from(
                &wire
                    .command(s, &format!("EHLO {}", self.helo_name), 2)
                    .await?,
            );
        }

        if let Some((user, pass)) = &self.credentials {
            let s = at(Stage::Auth);
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
        }

        Ok((wire, caps))
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

/// What the server's EHLO reply offers.
#[derive(Debug, Default)]
struct Capabilities {
    starttls: bool,
    auth_plain: bool,
    auth_login: bool,
    eight_bit: bool,
}

impl From<&Reply> for Capabilities {
    fn from(r: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        // The first line is the server's greeting name.
        for line in r.lines.iter().skip(1) {
            let upper = line.to_ascii_uppercase();
            let mut words = upper.split([' ', '=']);
            match words.next().unwrap_or("") {
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eight_bit = true,
                "AUTH" => {
                    for mech in words {
                        match mech {
                            "PLAIN" => caps.auth_plain = true,
                            "LOGIN" => caps.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }
}

/// The message as DATA carries it: every line starting with a dot gets another (RFC 5321
/// 4.5.2), and it ends with CRLF so the final dot stands on its own line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 2);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        if out.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Where the system's CA bundle lives on common distributions (Debian/Ubuntu, RHEL/Fedora,
/// SUSE, Alpine), in the order OpenSSL-based tools find them.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        certs.push(cert.map_err(|e| format!("invalid certificate in {}: {e}", path.display()))?);
    }
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// Where the trusted roots come from (for logs and `doctor`).
#[derive(Debug, Clone, Default)]
pub struct TrustSources {
    /// The system bundle used (`SSL_CERT_FILE` or a distribution path), if any.
    pub system_bundle: Option<PathBuf>,
    /// True when no system bundle exists and the compiled-in Mozilla roots are used.
    pub compiled_roots: bool,
    /// `SMTP_CA_FILE`, trusted in addition.
    pub extra_ca_file: Option<PathBuf>,
}

/// The rustls configuration for the relay: system roots (or the compiled-in ones when the
/// machine has none) plus `extra_ca_file`. `ssl_cert_file` replaces the distribution bundle,
/// as for OpenSSL. A named file that cannot be read or holds no certificate is an error
/// naming it.
pub fn tls_config(
    ssl_cert_file: Option<&Path>,
    extra_ca_file: Option<&Path>,
) -> Result<(Arc<rustls::ClientConfig>, TrustSources), String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut sources = TrustSources::default();
    let system = match ssl_cert_file {
        Some(p) => Some((
            p.to_path_buf(),
            read_pem_certs(p).map_err(|e| format!("SSL_CERT_FILE: {e}"))?,
        )),
        None => SYSTEM_BUNDLES
            .iter()
            .map(Path::new)
            .filter(|p| p.is_file())
            .find_map(|p| read_pem_certs(p).ok().map(|c| (p.to_path_buf(), c))),
    };
    match system {
        Some((path, certs)) => {
            // A bundle may hold a certificate rustls cannot parse; the others still count.
            let (_added, _ignored) = roots.add_parsable_certificates(certs);
            sources.system_bundle = Some(path);
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            sources.compiled_roots = true;
        }
    }
    if let Some(p) = extra_ca_file {
        for cert in read_pem_certs(p).map_err(|e| format!("SMTP_CA_FILE: {e}"))? {
            roots.add(cert).map_err(|e| {
                format!(
                    "SMTP_CA_FILE: invalid CA certificate in {}: {e}",
                    p.display()
                )
            })?;
        }
        sources.extra_ca_file = Some(p.to_path_buf());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(config), sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_with_crlf() {
        assert_eq!(dot_stuff(b".a\r\nb.\r\n..c"), b"..a\r\nb.\r\n...c\r\n");
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n");
        assert_eq!(dot_stuff(b"x\r"), b"x\r\n");
    }

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

    #[test]
    fn ehlo_capabilities_are_read() {
        let r = Reply {
            code: 250,
            lines: vec![
                "relay.example".into(),
                "STARTTLS".into(),
                "AUTH=LOGIN".into(),
                "8BITMIME".into(),
            ],
        };
        let c = Capabilities::from(&r);
        assert!(c.starttls && c.auth_login && !c.auth_plain && c.eight_bit);
    }
}
