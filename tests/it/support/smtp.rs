//! A small in-process SMTP server for the tests: real TCP on 127.0.0.1, enough of RFC 5321
//! for an SMTP client (greeting, EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN accepting anything,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT), optionally behind TLS (implicit, or STARTTLS) with a
//! certificate from a CA made by the test ([`TestPki`]).
//!
//! It records every message it took in full (received up to the final dot) and can be told
//! to misbehave, per server and changeable between cycles: refuse any step with a given
//! reply (421, 451, 550 …), hang or close the connection after the final dot (the message
//! was received, so it may count as delivered), close in the middle of DATA, or never
//! answer at all.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A step of the conversation where the server can refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Greeting,
    Ehlo,
    Mail,
    Rcpt,
    /// The DATA command (instead of 354).
    Data,
    /// The final dot (instead of 250 queued).
    EndOfData,
}

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Accept,
    /// Answer AUTH with this reply (e.g. `535 5.7.8 bad credentials`).
    RejectAuth(String),
    /// Answer RCPT TO with this reply (e.g. `550 5.1.1 no such user`).
    RejectRcpt(String),
    /// Answer the end of DATA with this reply.
    RejectData(String),
    /// Answer this step with this reply (then carry on as a server does after a refusal;
    /// a 421 also closes the connection).
    FailAt(Step, String),
    /// Accept the TCP connection and never say anything.
    Hang,
    /// Read the whole message, then never answer the final dot (the message is recorded:
    /// the server has it).
    HangAfterData,
    /// Read the whole message, then close the connection without answering (recorded).
    CloseAfterData,
    /// Read the first line of the message, then close the connection (not recorded).
    CloseMidData,
}

/// TLS on the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (smtps://).
    Implicit,
    /// Offer STARTTLS after EHLO.
    StartTls,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The EHLO name the client gave.
    pub helo: String,
    /// Whether the message came over TLS.
    pub tls: bool,
    /// The message as sent after DATA (dot-unstuffed, CRLF line ends).
    pub data: String,
}

/// Header lines of a block, unfolded, in order.
pub fn header_lines(block: &str) -> Vec<(String, String)> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in block.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = unfolded.last_mut() {
                last.push(' ');
                last.push_str(line.trim_start());
            }
        } else if !line.is_empty() {
            unfolded.push(line.to_string());
        }
    }
    unfolded
        .iter()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

impl Received {
    /// The value of a header (unfolded), from the top-level header block.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Every value of a header in the top-level block (to check it appears once).
    pub fn headers(&self, name: &str) -> Vec<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        header_lines(head)
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

/// A CA made for the test and a server certificate it signed for 127.0.0.1 and localhost.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl (install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-new"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=autopilot test relay CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req", "-new"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "relay.key",
            "-out",
            "relay.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("relay.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "relay.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "relay.pem",
                "-days",
                "2",
                "-extfile",
                "relay.ext",
            ],
        );
        let chain: Vec<_> =
            rustls_pemfile::certs(&mut std::fs::read(dir.join("relay.pem")).unwrap().as_slice())
                .map(|c| c.unwrap())
                .collect();
        let key = rustls_pemfile::private_key(
            &mut std::fs::read(dir.join("relay.key")).unwrap().as_slice(),
        )
        .unwrap()
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TestPki {
            dir: dir.to_path_buf(),
            ca_pem: dir.join("ca.pem"),
            server_config: Arc::new(server_config),
        }
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    connections: Mutex<u64>,
    tls: Option<(TlsMode, Arc<rustls::ServerConfig>)>,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::start_with(None).await
    }

    /// A server speaking TLS (implicit or STARTTLS) with `pki`'s certificate.
    pub async fn start_tls(mode: TlsMode, pki: &TestPki) -> SmtpServer {
        Self::start_with(Some((mode, pki.server_config.clone()))).await
    }

    async fn start_with(tls: Option<(TlsMode, Arc<rustls::ServerConfig>)>) -> SmtpServer {
        // Small receive buffers, so a client writing a large message is still writing when
        // the server drops the connection in the middle of DATA.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = socket.listen(128).expect("binding the test SMTP server");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            behaviour: Mutex::new(Behaviour::Accept),
            connections: Mutex::new(0),
            tls,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                *s.connections.lock().unwrap() += 1;
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(stream, s).await;
                });
            }
        });
        SmtpServer { addr, shared, task }
    }

    /// `smtp://127.0.0.1:PORT` (`smtps://` for implicit TLS, `?tls=starttls` for STARTTLS).
    pub fn url(&self) -> String {
        let (scheme, query) = match self.shared.tls.as_ref().map(|t| t.0) {
            None => ("smtp", ""),
            Some(TlsMode::Implicit) => ("smtps", ""),
            Some(TlsMode::StartTls) => ("smtp", "?tls=starttls"),
        };
        format!("{scheme}://{}:{}{query}", self.addr.ip(), self.addr.port())
    }

    pub fn messages(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = b;
    }

    pub fn connections(&self) -> u64 {
        *self.shared.connections.lock().unwrap()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufReader<Box<dyn Io>>;

async fn reply(w: &mut Conn, text: &str) -> std::io::Result<()> {
    let w = w.get_mut();
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

fn angle_addr(arg: &str) -> String {
    match (arg.find('<'), arg.find('>')) {
        (Some(a), Some(b)) if b > a => arg[a + 1..b].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// The refusal configured for `step`, if any.
fn refusal(b: &Behaviour, step: Step) -> Option<String> {
    match (b, step) {
        (Behaviour::FailAt(s, r), _) if *s == step => Some(r.clone()),
        (Behaviour::RejectRcpt(r), Step::Rcpt) => Some(r.clone()),
        (Behaviour::RejectData(r), Step::EndOfData) => Some(r.clone()),
        _ => None,
    }
}

/// Send a refusal; true when the server then hangs up (421 means closing).
async fn refuse(conn: &mut Conn, r: &str) -> std::io::Result<bool> {
    reply(conn, r).await?;
    Ok(r.starts_with("421"))
}

async fn session(stream: tokio::net::TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let current = || shared.behaviour.lock().unwrap().clone();
    let mut tls_on = false;
    let boxed: Box<dyn Io> = match &shared.tls {
        Some((TlsMode::Implicit, config)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            tls_on = true;
            Box::new(acceptor.accept(stream).await?)
        }
        _ => Box::new(stream),
    };
    let mut conn: Conn = BufReader::new(boxed);
    if current() == Behaviour::Hang {
        // Hold the socket open, say nothing, until the client gives up.
        let mut sink = String::new();
        while conn.read_line(&mut sink).await? > 0 {
            sink.clear();
        }
        return Ok(());
    }
    if let Some(r) = refusal(&current(), Step::Greeting) {
        // A server that refuses at the greeting answers everything else with 503 until QUIT.
        if refuse(&mut conn, &r).await? {
            return Ok(());
        }
    } else {
        reply(&mut conn, "220 test.local ESMTP ready").await?;
    }
    let greeting_refused = refusal(&current(), Step::Greeting).is_some();
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut helo = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper == "QUIT" {
            reply(&mut conn, "221 2.0.0 Bye").await?;
            return Ok(());
        }
        if greeting_refused {
            reply(&mut conn, "503 5.5.1 no service").await?;
            continue;
        }
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if let Some(r) = refusal(&current(), Step::Ehlo) {
                if refuse(&mut conn, &r).await? {
                    return Ok(());
                }
                continue;
            }
            helo = cmd.get(5..).unwrap_or("").trim().to_string();
            let starttls = matches!(&shared.tls, Some((TlsMode::StartTls, _))) && !tls_on;
            let mut caps = String::from("250-test.local\r\n");
            if starttls {
                caps.push_str("250-STARTTLS\r\n");
            }
            caps.push_str(
                "250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n",
            );
            let w = conn.get_mut();
            w.write_all(caps.as_bytes()).await?;
            w.flush().await?;
        } else if upper == "STARTTLS" {
            let Some((TlsMode::StartTls, config)) = shared.tls.clone() else {
                reply(&mut conn, "502 5.5.1 not offered").await?;
                continue;
            };
            reply(&mut conn, "220 2.0.0 Ready to start TLS").await?;
            let inner = conn.into_inner();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = acceptor.accept(inner).await?;
            tls_on = true;
            conn = BufReader::new(Box::new(tls));
        } else if upper.starts_with("AUTH") {
            let mut parts = cmd.split_whitespace().skip(1);
            let mech = parts.next().unwrap_or("").to_ascii_uppercase();
            let initial = parts.next();
            // Collect the client's answers to the challenges, then decide.
            match (mech.as_str(), initial) {
                ("PLAIN", None) => {
                    reply(&mut conn, "334 ").await?;
                    line.clear();
                    conn.read_line(&mut line).await?;
                }
                ("LOGIN", _) => {
                    reply(&mut conn, "334 VXNlcm5hbWU6").await?;
                    line.clear();
                    conn.read_line(&mut line).await?;
                    reply(&mut conn, "334 UGFzc3dvcmQ6").await?;
                    line.clear();
                    conn.read_line(&mut line).await?;
                }
                _ => {}
            }
            match current() {
                Behaviour::RejectAuth(r) => reply(&mut conn, &r).await?,
                _ => reply(&mut conn, "235 2.7.0 Authentication successful").await?,
            }
        } else if upper.starts_with("MAIL FROM:") {
            if let Some(r) = refusal(&current(), Step::Mail) {
                if refuse(&mut conn, &r).await? {
                    return Ok(());
                }
                continue;
            }
            mail_from = angle_addr(&cmd[10..]);
            rcpt_to.clear();
            reply(&mut conn, "250 2.1.0 OK").await?;
        } else if upper.starts_with("RCPT TO:") {
            if let Some(r) = refusal(&current(), Step::Rcpt) {
                if refuse(&mut conn, &r).await? {
                    return Ok(());
                }
                continue;
            }
            rcpt_to.push(angle_addr(&cmd[8..]));
            reply(&mut conn, "250 2.1.5 OK").await?;
        } else if upper == "DATA" {
            if let Some(r) = refusal(&current(), Step::Data) {
                if refuse(&mut conn, &r).await? {
                    return Ok(());
                }
                continue;
            }
            if rcpt_to.is_empty() {
                reply(&mut conn, "554 5.5.1 no valid recipients").await?;
                continue;
            }
            reply(&mut conn, "354 End data with <CR><LF>.<CR><LF>").await?;
            if current() == Behaviour::CloseMidData {
                line.clear();
                conn.read_line(&mut line).await?;
                // Unread data in the socket makes this close a reset: the client's writes fail.
                return Ok(());
            }
            let mut data = String::new();
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            let got = Received {
                mail_from: mail_from.clone(),
                rcpt_to: rcpt_to.clone(),
                helo: helo.clone(),
                tls: tls_on,
                data,
            };
            let behaviour = current();
            match behaviour {
                Behaviour::HangAfterData => {
                    shared.received.lock().unwrap().push(got);
                    let mut sink = String::new();
                    while conn.read_line(&mut sink).await? > 0 {
                        sink.clear();
                    }
                    return Ok(());
                }
                Behaviour::CloseAfterData => {
                    shared.received.lock().unwrap().push(got);
                    return Ok(());
                }
                _ => {}
            }
            if let Some(r) = refusal(&behaviour, Step::EndOfData) {
                if refuse(&mut conn, &r).await? {
                    return Ok(());
                }
                continue;
            }
            shared.received.lock().unwrap().push(got);
            reply(&mut conn, "250 2.0.0 queued").await?;
        } else if upper == "RSET" {
            mail_from.clear();
            rcpt_to.clear();
            reply(&mut conn, "250 2.0.0 OK").await?;
        } else if upper == "NOOP" {
            reply(&mut conn, "250 2.0.0 OK").await?;
        } else {
            reply(&mut conn, "500 5.5.2 command not recognized").await?;
        }
    }
}
