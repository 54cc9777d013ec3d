//! The bytes of an SMTP conversation: the TCP or TLS stream (never raising SIGPIPE), reading
//! replies line by line with their bounds, sending commands, the EHLO capabilities and
//! DATA's dot-stuffing.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Failure, Stage};

/// A TCP stream whose vectored writes go through `send(2)` one buffer at a time. `writev`
/// (which a TLS stream may use) takes no MSG_NOSIGNAL flag, so a write that meets EPIPE on a
/// connection the relay closed would raise SIGPIPE, and the binary restores SIGPIPE's
/// default action (the process would end).
pub(super) struct NoSigPipe(pub(super) TcpStream);

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

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<NoSigPipe>>),
    /// Transient, while upgrading.
    Gone,
}

/// A connection with its read buffer (replies are read line by line).
pub(super) struct Wire {
    pub(super) stream: Stream,
    pub(super) buf: Vec<u8>,
}

pub(super) const MAX_REPLY_BYTES: usize = 64 * 1024;

impl Wire {
    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
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
    pub(super) async fn reply(&mut self, stage: Stage) -> Result<Reply, Failure> {
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

    pub(super) async fn send_line(&mut self, stage: Stage, line: &str) -> Result<(), Failure> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write_all(&bytes)
            .await
            .map_err(|e| io_failure(stage, e))
    }

    /// Send a command and require a reply of class `want` (2 or 3).
    pub(super) async fn command(
        &mut self,
        stage: Stage,
        line: &str,
        want: u16,
    ) -> Result<Reply, Failure> {
        self.send_line(stage, line).await?;
        expect(self.reply(stage).await?, stage, want)
    }
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

pub(super) fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
    )
}

pub(super) fn io_failure(stage: Stage, error: std::io::Error) -> Failure {
    if is_closed(&error) {
        Failure::Closed { stage }
    } else {
        Failure::Io { stage, error }
    }
}

pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" ").trim().to_string()
    }
}

pub(super) fn expect(r: Reply, stage: Stage, class: u16) -> Result<Reply, Failure> {
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

/// What the server's EHLO reply offers.
#[derive(Debug, Default)]
pub(super) struct Capabilities {
    pub(super) starttls: bool,
    pub(super) auth_plain: bool,
    pub(super) auth_login: bool,
    pub(super) eight_bit: bool,
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
