//! TLS to PostgreSQL, against the throwaway server of scripts/pg-ephemeral, which has a
//! self-signed CA (`PGEPHEMERAL_CA`) and a certificate for `localhost` and `127.0.0.1`, and
//! also listens on 127.0.0.2, an address the certificate does not name.
//!
//! Exit codes: a failed handshake (foreign root, host name not in the certificate, server
//! without TLS) is exit 75, like any other failure to establish the session: the input was
//! well formed, the server or its certificate is what does not fit, and that can change on
//! the server's side (certificate rotation) without touching the agent's configuration.
//! What can be judged without the network (an invalid sslmode, a missing, unreadable or
//! empty sslrootcert, verify-* without a root) is bad input: exit 2 before connecting.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::str::FromStr;

use crate::common::*;
use autopilot::db::DbSettings;

/// The CA that signed the test server's certificate.
fn ca() -> PathBuf {
    let path = std::env::var("PGEPHEMERAL_CA").unwrap_or_else(|_| {
        panic!(
            "PGEPHEMERAL_CA is not set, so the test server has no TLS: run the TLS tests under \
             scripts/pg-ephemeral (e.g. `scripts/pg-ephemeral cargo test --test it tls::`, or `make \
             test`), which starts PostgreSQL with a self-signed CA and exports its path"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "PGEPHEMERAL_CA={} is not a file",
        path.display()
    );
    path
}

/// User, port and database of the test server (its host is always the loopback).
struct Server {
    user: String,
    port: u16,
    db: String,
}

fn server() -> Server {
    let config =
        tokio_postgres::Config::from_str(&base_url()).expect("AUTOPILOT_TEST_DATABASE_URL parses");
    Server {
        user: config.get_user().unwrap_or("postgres").to_string(),
        port: *config.get_ports().first().unwrap_or(&5432),
        db: config.get_dbname().unwrap_or("postgres").to_string(),
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A URL for the test server at `host` with the given query (sslmode=…&sslrootcert=…).
fn url(host: &str, query: &str) -> String {
    let s = server();
    format!("postgres://{}@{host}:{}/{}?{query}", s.user, s.port, s.db)
}

fn root(path: &Path) -> String {
    format!("sslrootcert={}", enc(&path.display().to_string()))
}

/// A self-signed CA that did not sign the server's certificate.
fn foreign_ca(dir: &Path) -> PathBuf {
    let crt = dir.join("foreign-ca.crt");
    let out = StdCommand::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join("foreign-ca.key"))
        .arg("-out")
        .arg(&crt)
        .args(["-days", "2", "-subj", "/CN=some other CA"])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .output()
        .expect("running openssl to generate a second CA (install openssl)");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crt
}

/// `autopilot migrate --status` (it opens one direct connection and only reads) with a
/// clean environment and no DATABASE_URL: the caller adds the connection settings.
fn autopilot() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["migrate", "--status"])
        .timeout(std::time::Duration::from_secs(60));
    cmd
}

struct Outcome {
    code: i32,
    stderr: String,
}

fn run(cmd: &mut assert_cmd::Command) -> Outcome {
    let out = cmd.output().expect("running autopilot");
    Outcome {
        code: out.status.code().expect("autopilot ended by a signal"),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn run_url(url: &str) -> Outcome {
    run(autopilot().env("DATABASE_URL", url))
}

/// The error a failed run printed: exactly one line, starting with `error:`.
fn one_error_line(o: &Outcome) -> &str {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, got:\n{}",
        o.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", o.stderr);
    lines[0]
}

/// Whether the session opened with these settings is encrypted, as the server sees it.
async fn session_is_encrypted(url: &str) -> bool {
    let settings = DbSettings::resolve(Some(url)).expect("settings resolve");
    let client = settings.connect().await.expect("connecting");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("reading pg_stat_ssl")
        .get(0)
}

// ----------------------------------------------------------------------------- require

#[test]
fn require_connects() {
    let _ = ca();
    let o = run_url(&url("127.0.0.1", "sslmode=require"));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test]
async fn require_gives_an_encrypted_session() {
    let _ = ca();
    assert!(session_is_encrypted(&url("127.0.0.1", "sslmode=require")).await);
}

#[tokio::test]
async fn require_uses_the_pool_encrypted_too() {
    let _ = ca();
    let settings = DbSettings::resolve(Some(&url("127.0.0.1", "sslmode=require"))).unwrap();
    let pool = settings.pool(1).unwrap();
    let client = autopilot::db::get(&pool, &settings).await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
}

#[test]
fn require_with_a_root_certificate_verifies_the_chain_like_libpq() {
    let _ = ca();
    let dir = tempfile::tempdir().unwrap();
    let foreign = foreign_ca(dir.path());
    let o = run_url(&url(
        "127.0.0.1",
        &format!("sslmode=require&{}", root(&foreign)),
    ));
    assert_eq!(o.code, 75, "{}", o.stderr);
    assert!(
        one_error_line(&o).contains("not signed by the CA in sslrootcert"),
        "{}",
        o.stderr
    );
}

#[test]
fn require_refuses_a_server_that_does_not_offer_tls() {
    // A server that answers the SSLRequest with 'N' (no TLS), as one without ssl=on does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        sock.read_exact(&mut request).unwrap();
        // SSLRequest: length 8, code 80877103.
        assert_eq!(
            request,
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            "expected an SSLRequest first"
        );
        sock.write_all(b"N").unwrap();
        // Whatever follows would be a plaintext startup message: require must not send one.
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest);
        rest
    });
    let o = run_url(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"
    ));
    let plaintext_after_refusal = server.join().unwrap();
    assert_eq!(o.code, 75, "{}", o.stderr);
    assert!(one_error_line(&o).contains("TLS"), "{}", o.stderr);
    assert!(
        plaintext_after_refusal.is_empty(),
        "a startup message was sent in plaintext"
    );
}

// ------------------------------------------------------------------------- verify-full

#[test]
fn verify_full_with_the_right_root_connects_to_the_address_in_the_certificate() {
    let ca = ca();
    let o = run_url(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&{}", root(&ca)),
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn verify_full_with_the_right_root_connects_to_the_name_in_the_certificate() {
    let ca = ca();
    let o = run_url(&url(
        "localhost",
        &format!("sslmode=verify-full&{}", root(&ca)),
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test]
async fn verify_full_gives_an_encrypted_session() {
    let ca = ca();
    assert!(
        session_is_encrypted(&url(
            "localhost",
            &format!("sslmode=verify-full&{}", root(&ca))
        ))
        .await
    );
}

#[test]
fn verify_full_with_a_foreign_root_fails_with_exit_75_and_one_clear_line() {
    let _ = ca();
    let dir = tempfile::tempdir().unwrap();
    let foreign = foreign_ca(dir.path());
    let s = server();
    let o = run_url(&format!(
        "postgres://{}:Sup3rSecretPw@127.0.0.1:{}/{}?sslmode=verify-full&{}",
        s.user,
        s.port,
        s.db,
        root(&foreign)
    ));
    assert_eq!(o.code, 75, "{}", o.stderr);
    let line = one_error_line(&o);
    assert!(line.contains("cannot connect to database"), "{line}");
    assert!(
        line.contains("not signed by the CA in sslrootcert"),
        "{line}"
    );
    assert!(
        line.contains(&foreign.display().to_string()),
        "names the root in use: {line}"
    );
    assert!(
        !o.stderr.contains("Sup3rSecretPw"),
        "password leaked: {}",
        o.stderr
    );
}

#[test]
fn verify_full_rejects_a_host_the_certificate_does_not_name() {
    let ca = ca();
    // 127.0.0.2 reaches the same server (loopback) but is not in its certificate.
    let o = run_url(&url(
        "127.0.0.2",
        &format!("sslmode=verify-full&{}", root(&ca)),
    ));
    assert_eq!(o.code, 75, "{}", o.stderr);
    let line = one_error_line(&o);
    assert!(line.contains("127.0.0.2"), "{line}");
    assert!(line.contains("does not name the host"), "{line}");
}

// --------------------------------------------------------------------------- verify-ca

#[test]
fn verify_ca_accepts_a_host_the_certificate_does_not_name() {
    let ca = ca();
    let o = run_url(&url(
        "127.0.0.2",
        &format!("sslmode=verify-ca&{}", root(&ca)),
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn verify_ca_with_a_foreign_root_fails_with_exit_75() {
    let _ = ca();
    let dir = tempfile::tempdir().unwrap();
    let foreign = foreign_ca(dir.path());
    let o = run_url(&url(
        "127.0.0.2",
        &format!("sslmode=verify-ca&{}", root(&foreign)),
    ));
    assert_eq!(o.code, 75, "{}", o.stderr);
    assert!(
        one_error_line(&o).contains("not signed by the CA in sslrootcert"),
        "{}",
        o.stderr
    );
}

// ----------------------------------------------------------------- disable and prefer

#[tokio::test]
async fn disable_gives_an_unencrypted_session() {
    let _ = ca();
    assert!(!session_is_encrypted(&url("127.0.0.1", "sslmode=disable")).await);
    let o = run_url(&url("127.0.0.1", "sslmode=disable"));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test]
async fn prefer_uses_tls_when_the_server_offers_it() {
    let _ = ca();
    assert!(session_is_encrypted(&url("127.0.0.1", "sslmode=prefer")).await);
}

// ------------------------------------------------------------------ libpq variables

fn autopilot_with_pg_vars(host: &str) -> assert_cmd::Command {
    let s = server();
    let mut cmd = autopilot();
    cmd.env("PGHOST", host)
        .env("PGPORT", s.port.to_string())
        .env("PGUSER", &s.user)
        .env("PGDATABASE", &s.db);
    cmd
}

#[test]
fn pgsslmode_and_pgsslrootcert_are_honoured_without_database_url() {
    let ca = ca();
    let ok = run(autopilot_with_pg_vars("localhost")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca));
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    let wrong_host = run(autopilot_with_pg_vars("127.0.0.2")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca));
    assert_eq!(wrong_host.code, 75, "{}", wrong_host.stderr);
    assert!(
        one_error_line(&wrong_host).contains("does not name the host"),
        "{}",
        wrong_host.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let foreign = foreign_ca(dir.path());
    let wrong_root = run(autopilot_with_pg_vars("127.0.0.1")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &foreign));
    assert_eq!(wrong_root.code, 75, "{}", wrong_root.stderr);

    let bad_mode = run(autopilot_with_pg_vars("127.0.0.1").env("PGSSLMODE", "always"));
    assert_eq!(bad_mode.code, 2, "{}", bad_mode.stderr);
    assert!(
        one_error_line(&bad_mode).contains("invalid sslmode 'always'"),
        "{}",
        bad_mode.stderr
    );
}

#[test]
fn sslmode_in_the_url_wins_over_pgsslmode() {
    let _ = ca();
    // PGSSLMODE=verify-full without a root would be exit 2; the URL's disable decides.
    let o = run(autopilot()
        .env("DATABASE_URL", url("127.0.0.1", "sslmode=disable"))
        .env("PGSSLMODE", "verify-full"));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

// ------------------------------------------------------------------------ bad input

/// A port on which nothing listens: a run that tried to connect would exit 75, not 2.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn invalid_sslmode_is_bad_usage_with_exit_2() {
    let o = run_url(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify",
        closed_port()
    ));
    assert_eq!(o.code, 2, "{}", o.stderr);
    let line = one_error_line(&o);
    assert!(line.contains("invalid sslmode 'verify'"), "{line}");
    assert!(
        line.contains("verify-full"),
        "lists the valid values: {line}"
    );
}

#[test]
fn missing_sslrootcert_is_bad_input_with_exit_2_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.crt");
    let o = run_url(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&{}",
        closed_port(),
        root(&missing)
    ));
    assert_eq!(o.code, 2, "{}", o.stderr);
    let line = one_error_line(&o);
    assert!(line.contains("cannot read sslrootcert"), "{line}");
    assert!(line.contains(&missing.display().to_string()), "{line}");
}

#[test]
fn sslrootcert_without_a_certificate_is_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "this is not a PEM certificate\n").unwrap();
    let o = run_url(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-ca&{}",
        closed_port(),
        root(&junk)
    ));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        one_error_line(&o).contains("no certificate found"),
        "{}",
        o.stderr
    );
}

#[test]
fn verify_full_without_a_root_certificate_is_bad_usage_with_exit_2() {
    // The clean environment has no HOME, so there is no ~/.postgresql/root.crt either.
    let o = run_url(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full",
        closed_port()
    ));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        one_error_line(&o).contains("needs a root certificate"),
        "{}",
        o.stderr
    );
}
