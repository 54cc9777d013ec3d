//! A small in-process SMTP server for the tests: real TCP on 127.0.0.1, enough of RFC 5321
//! for lettre (greeting, EHLO/HELO, AUTH PLAIN/LOGIN accepting anything, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT). It records every accepted message and can be told to refuse at AUTH,
//! RCPT or DATA with a given reply, or to hang (accept the connection, never answer).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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
    /// Accept the TCP connection and never say anything.
    Hang,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA (dot-unstuffed, CRLF line ends).
    pub data: String,
}

impl Received {
    /// The value of a header (unfolded), from the top-level header block.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut unfolded: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = unfolded.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim_start());
                }
            } else {
                unfolded.push(line.to_string());
            }
        }
        unfolded.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    connections: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test SMTP server");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour::Accept));
        let connections = Arc::new(Mutex::new(0));
        let (r, b, n) = (received.clone(), behaviour.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                *n.lock().unwrap() += 1;
                let (r, b) = (r.clone(), b.clone());
                tokio::spawn(async move {
                    let _ = session(stream, r, b).await;
                });
            }
        });
        SmtpServer {
            addr,
            received,
            behaviour,
            connections,
            task,
        }
    }

    /// `smtp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("smtp://{}:{}", self.addr.ip(), self.addr.port())
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    pub fn connections(&self) -> u64 {
        *self.connections.lock().unwrap()
    }
}

async fn reply(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> std::io::Result<()> {
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

async fn session(
    stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
) -> std::io::Result<()> {
    let current = || behaviour.lock().unwrap().clone();
    let (rd, mut w) = stream.into_split();
    let mut rd = BufReader::new(rd);
    if current() == Behaviour::Hang {
        // Hold the socket open, say nothing, until the client gives up.
        let mut sink = String::new();
        while rd.read_line(&mut sink).await? > 0 {
            sink.clear();
        }
        return Ok(());
    }
    reply(&mut w, "220 test.local ESMTP ready").await?;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-test.local\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n")
                .await?;
            w.flush().await?;
        } else if upper.starts_with("HELO") {
            reply(&mut w, "250 test.local").await?;
        } else if upper.starts_with("AUTH") {
            let mut parts = cmd.split_whitespace().skip(1);
            let mech = parts.next().unwrap_or("").to_ascii_uppercase();
            let initial = parts.next();
            // Collect the client's answers to the challenges, then decide.
            match (mech.as_str(), initial) {
                ("PLAIN", None) => {
                    reply(&mut w, "334 ").await?;
                    line.clear();
                    rd.read_line(&mut line).await?;
                }
                ("LOGIN", _) => {
                    reply(&mut w, "334 VXNlcm5hbWU6").await?;
                    line.clear();
                    rd.read_line(&mut line).await?;
                    reply(&mut w, "334 UGFzc3dvcmQ6").await?;
                    line.clear();
                    rd.read_line(&mut line).await?;
                }
                _ => {}
            }
            match current() {
                Behaviour::RejectAuth(r) => reply(&mut w, &r).await?,
                _ => reply(&mut w, "235 2.7.0 Authentication successful").await?,
            }
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = angle_addr(&cmd[10..]);
            rcpt_to.clear();
            reply(&mut w, "250 2.1.0 OK").await?;
        } else if upper.starts_with("RCPT TO:") {
            match current() {
                Behaviour::RejectRcpt(r) => reply(&mut w, &r).await?,
                _ => {
                    rcpt_to.push(angle_addr(&cmd[8..]));
                    reply(&mut w, "250 2.1.5 OK").await?;
                }
            }
        } else if upper == "DATA" {
            reply(&mut w, "354 End data with <CR><LF>.<CR><LF>").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if rd.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            match current() {
                Behaviour::RejectData(r) => reply(&mut w, &r).await?,
                _ => {
                    received.lock().unwrap().push(Received {
                        mail_from: mail_from.clone(),
                        rcpt_to: rcpt_to.clone(),
                        data,
                    });
                    reply(&mut w, "250 2.0.0 queued").await?;
                }
            }
        } else if upper == "RSET" {
            mail_from.clear();
            rcpt_to.clear();
            reply(&mut w, "250 2.0.0 OK").await?;
        } else if upper == "NOOP" {
            reply(&mut w, "250 2.0.0 OK").await?;
        } else if upper == "QUIT" {
            reply(&mut w, "221 2.0.0 Bye").await?;
            return Ok(());
        } else {
            reply(&mut w, "500 5.5.2 command not recognized").await?;
        }
    }
}
