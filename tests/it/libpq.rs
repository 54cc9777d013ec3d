//! Connection settings follow libpq, as psql does (SPEC 1), each against a real server:
//! Unix-domain sockets, the password file, the service file, PGOPTIONS, connect_timeout
//! bounding the whole startup, host and port lists, target_session_attrs on a real
//! primary and streaming standby, sslrootcert=system, and a refused login as exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use autopilot::db::DbSettings;

fn port() -> String {
    std::env::var("PGEPHEMERAL_PORT").expect("PGEPHEMERAL_PORT: run under scripts/pg-ephemeral")
}

/// The test server's Unix-socket directory.
fn socket_dir() -> String {
    std::env::var("PGEPHEMERAL_DIR").expect("PGEPHEMERAL_DIR: run under scripts/pg-ephemeral")
}

/// `autopilot` with nothing but PATH in its environment (and HOME pointing at `home`, so
/// that no ~/.pgpass or ~/.pg_service.conf of the machine is read).
fn bare(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PGSYSCONFDIR", home)
        .env("RUST_LOG", "warn");
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// One `error:` line (warnings aside) and the exit code.
fn assert_error(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(errors[0].starts_with("error: "), "{err}");
    errors[0].to_string()
}

/// A login role that must give a password over TCP (pg-ephemeral: members of
/// `password_users` use scram-sha-256), superuser so it can run any command.
async fn password_role(name: &str, password: &str) {
    let admin = connect(&base_url()).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                 CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}' IN ROLE password_users;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;"
        ))
        .await
        .unwrap();
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

// ------------------------------------------------------------------------- Unix sockets

#[tokio::test]
async fn a_socket_directory_as_host_connects_without_tls_like_psql() {
    let db = TestDb::new().await;
    let home = tempfile::tempdir().unwrap();
    // In a keyword=value string, a URL query and PGHOST.
    let kv = format!(
        "host={} port={} user=postgres dbname={}",
        socket_dir(),
        port(),
        db.name
    );
    assert_ok(
        &bare(home.path())
            .env("DATABASE_URL", &kv)
            .args(["status"])
            .output()
            .unwrap(),
    );
    let url = format!(
        "postgresql:///{}?host={}&port={}&user=postgres",
        db.name,
        socket_dir(),
        port()
    );
    assert_ok(
        &bare(home.path())
            .env("DATABASE_URL", &url)
            .args(["status"])
            .output()
            .unwrap(),
    );
    assert_ok(
        &bare(home.path())
            .env("PGHOST", socket_dir())
            .env("PGPORT", port())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", &db.name)
            .args(["status"])
            .output()
            .unwrap(),
    );
    // The session is a Unix-socket one, unencrypted (the server offers TLS on TCP).
    let settings = DbSettings::resolve(Some(&kv)).unwrap();
    let c = settings.connect().await.unwrap();
    let row = c
        .query_one(
            "SELECT ssl, client_addr IS NULL FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
              WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "no TLS over a socket");
    assert!(
        row.get::<_, bool>(1),
        "a Unix-socket session has no client address"
    );
    let r = autopilot::db::connection_report(&settings).await.unwrap();
    assert!(r.socket);
    assert_eq!(r.target, format!("{}/.s.PGSQL.{}", socket_dir(), port()));
    assert_eq!((r.ssl_mode.as_str(), r.encrypted), ("disable", Some(false)));
}

// ------------------------------------------------------------------------ password file

#[tokio::test]
async fn the_password_file_supplies_the_password_and_is_ignored_when_others_can_read_it() {
    password_role("pgpass_user", "pgpass-Secret-1").await;
    let db = TestDb::new().await;
    let home = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://pgpass_user@127.0.0.1:{}/{}?sslmode=disable",
        port(),
        db.name
    );
    let line = format!(
        "# test\n127.0.0.1:{}:*:pgpass_user:pgpass-Secret-1\n",
        port()
    );

    // PGPASSFILE, mode 0600.
    let file = home.path().join("pass");
    write_mode(&file, &line, 0o600);
    let o = bare(home.path())
        .env("DATABASE_URL", &url)
        .env("PGPASSFILE", &file)
        .args(["status"])
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(!stderr(&o).contains("pgpass-Secret-1"));

    // ~/.pgpass.
    write_mode(&home.path().join(".pgpass"), &line, 0o600);
    assert_ok(
        &bare(home.path())
            .env("DATABASE_URL", &url)
            .args(["status"])
            .output()
            .unwrap(),
    );

    // Readable by the group: ignored with libpq's warning, so no password: exit 2.
    write_mode(&home.path().join(".pgpass"), &line, 0o640);
    let o = bare(home.path())
        .env("DATABASE_URL", &url)
        .args(["status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 2);
    assert!(
        stderr(&o).contains("warning: password file")
            && stderr(&o).contains("group or world access"),
        "{}",
        stderr(&o)
    );
    assert!(err.contains("password"), "{err}");
    assert!(!stderr(&o).contains("pgpass-Secret-1"));
}

#[tokio::test]
async fn a_wrong_or_missing_password_is_a_configuration_error_exit_2() {
    password_role("pw_conn_user", "right-Secret-2").await;
    let db = TestDb::new().await;
    let home = tempfile::tempdir().unwrap();
    let o = bare(home.path())
        .env(
            "DATABASE_URL",
            format!(
                "postgres://pw_conn_user:Wr0ng-Secret-3@127.0.0.1:{}/{}",
                port(),
                db.name
            ),
        )
        .args(["status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 2);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!stderr(&o).contains("Wr0ng-Secret-3"));
    let o = bare(home.path())
        .env(
            "DATABASE_URL",
            format!("postgres://pw_conn_user@127.0.0.1:{}/{}", port(), db.name),
        )
        .args(["status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 2);
    assert!(
        err.contains("asks for a password and none is configured"),
        "{err}"
    );
}

// ------------------------------------------------------------------------- service file

#[tokio::test]
async fn a_service_from_each_service_file_connects_and_an_unknown_one_is_an_error() {
    let db = TestDb::new().await;
    let home = tempfile::tempdir().unwrap();
    let section = |name: &str| {
        format!(
            "# services\n[{name}]\nhost=127.0.0.1\nport={}\ndbname={}\nuser=postgres\nsslmode=disable\n",
            port(),
            db.name
        )
    };
    // PGSERVICEFILE + PGSERVICE.
    let file = home.path().join("services.conf");
    std::fs::write(&file, format!("[other]\nport=1\n{}", section("crm"))).unwrap();
    assert_ok(
        &bare(home.path())
            .env("PGSERVICEFILE", &file)
            .env("PGSERVICE", "crm")
            .args(["status"])
            .output()
            .unwrap(),
    );
    // service= in a connection string, from ~/.pg_service.conf.
    std::fs::write(home.path().join(".pg_service.conf"), section("home_svc")).unwrap();
    assert_ok(
        &bare(home.path())
            .env("DATABASE_URL", "service=home_svc")
            .args(["status"])
            .output()
            .unwrap(),
    );
    // PGSYSCONFDIR/pg_service.conf, and a URL's own settings win over the service's.
    let sys = tempfile::tempdir().unwrap();
    std::fs::write(
        sys.path().join("pg_service.conf"),
        format!(
            "[sys_svc]\nhost=127.0.0.1\nport=1\ndbname={}\nuser=postgres\n",
            db.name
        ),
    )
    .unwrap();
    assert_ok(
        &bare(home.path())
            .env("PGSYSCONFDIR", sys.path())
            .env(
                "DATABASE_URL",
                format!(
                    "postgres://127.0.0.1:{}?service=sys_svc&sslmode=disable",
                    port()
                ),
            )
            .args(["status"])
            .output()
            .unwrap(),
    );
    // An unknown service: exit 2 naming it, never a fallback to a default server (the
    // real server is in PGHOST/PGPORT: connecting there would succeed).
    let o = bare(home.path())
        .env("PGSERVICE", "nope")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port())
        .env("PGDATABASE", &db.name)
        .args(["status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 2);
    assert!(
        err.contains("definition of service \"nope\" not found"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------- PGOPTIONS

#[tokio::test]
async fn pgoptions_are_sent_at_startup() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let alert: uuid::Uuid = c
        .query_one(
            "SELECT alert_id FROM raise_agent_alert($1, 'slow_cycles', 'warning', 'slow', '{}'::jsonb, now())",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    let home = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        port(),
        db.name
    );
    let o = bare(home.path())
        .env("DATABASE_URL", &url)
        .env("PGOPTIONS", "-c default_transaction_read_only=on")
        .args(["ack-alert", &alert.to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("read-only transaction"),
        "{}",
        stderr(&o)
    );
    assert_ok(
        &bare(home.path())
            .env("DATABASE_URL", &url)
            .args(["ack-alert", &alert.to_string()])
            .output()
            .unwrap(),
    );
}

// ---------------------------------------------------------------------- connect_timeout

/// A TCP server that accepts connections and never says a word.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_silent_server_ends_in_exit_75_within_connect_timeout() {
    let (silent, _task) = silent_server().await;
    let home = tempfile::tempdir().unwrap();
    for (url, env) in [
        (
            format!("postgres://postgres@127.0.0.1:{silent}/db?connect_timeout=2"),
            None,
        ),
        (
            format!("postgres://postgres@127.0.0.1:{silent}/db"),
            Some("2"),
        ),
    ] {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("DATABASE_URL", &url)
            .arg("status")
            .kill_on_drop(true);
        if let Some(t) = env {
            cmd.env("PGCONNECT_TIMEOUT", t);
        }
        let started = Instant::now();
        let o = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("autopilot hung on a silent server")
            .unwrap();
        let took = started.elapsed();
        let err = assert_error(&o, 75);
        assert!(err.contains("timeout"), "{err}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
            "took {took:?}"
        );
    }
}

// ------------------------------------------------------------------ host and port lists

#[tokio::test]
async fn host_and_port_lists_are_tried_in_order() {
    let db = TestDb::new().await;
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on comes first: the second entry is used.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_ok(
        &bare(home.path())
            .env("PGHOST", "127.0.0.1,127.0.0.1")
            .env("PGPORT", format!("{closed},{}", port()))
            .env("PGUSER", "postgres")
            .env("PGDATABASE", &db.name)
            .env("PGSSLMODE", "disable")
            .args(["status"])
            .output()
            .unwrap(),
    );
    assert_ok(
        &bare(home.path())
            .env(
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{closed},127.0.0.1:{}/{}?sslmode=disable",
                    port(),
                    db.name
                ),
            )
            .args(["status"])
            .output()
            .unwrap(),
    );
    // Both closed: exit 75 naming each.
    let o = bare(home.path())
        .env("PGHOST", "127.0.0.1,127.0.0.1")
        .env("PGPORT", format!("{closed},{closed}"))
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name)
        .args(["status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 75);
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    // More ports than hosts: bad input.
    let o = bare(home.path())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", format!("{closed},{closed}"))
        .args(["status"])
        .output()
        .unwrap();
    assert_error(&o, 2);
}

// --------------------------------------------------------------- target_session_attrs

/// A primary and its streaming standby (pg_basebackup -R), both small, on their own ports
/// and stopped on drop.
struct Pair {
    dir: tempfile::TempDir,
    primary: u16,
    standby: u16,
    pg_ctl: PathBuf,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_basebackup").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("a PostgreSQL bin directory with pg_basebackup")
}

/// Run a server program, as the postgres user when we are root (servers refuse root).
fn as_server(program: &Path, args: &[&str]) {
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .output()
    } else {
        Command::new(program).args(args).output()
    }
    .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pair {
    fn start() -> Pair {
        let bin = pg_bindir();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if is_root() {
            Command::new("chown")
                .arg("postgres:")
                .arg(d)
                .status()
                .unwrap();
        }
        let primary_dir = d.join("primary");
        let standby_dir = d.join("standby");
        as_server(
            &bin.join("initdb"),
            &[
                "-D",
                primary_dir.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let (primary, standby) = (free_port(), free_port());
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            d.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(primary_dir.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .unwrap();
        let pg_ctl = bin.join("pg_ctl");
        as_server(
            &pg_ctl,
            &[
                "-D",
                primary_dir.to_str().unwrap(),
                "-o",
                &format!("-p {primary}"),
                "-l",
                d.join("primary.log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        as_server(
            &bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.to_string(),
                "-U",
                "postgres",
                "-D",
                standby_dir.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
            ],
        );
        as_server(
            &pg_ctl,
            &[
                "-D",
                standby_dir.to_str().unwrap(),
                "-o",
                &format!("-p {standby}"),
                "-l",
                d.join("standby.log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Pair {
            dir,
            primary,
            standby,
            pg_ctl,
        }
    }

    /// Which server (by port) a session opened with these settings landed on.
    async fn lands_on(&self, ports: &[u16], attrs: &str) -> Result<u16, String> {
        let hosts = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let url = format!(
            "postgres://postgres@{hosts}/postgres?sslmode=disable&target_session_attrs={attrs}"
        );
        let settings = DbSettings::resolve(Some(&url)).map_err(|e| e.to_string())?;
        let c = settings.connect().await.map_err(|e| format!("{e:#}"))?;
        let port: String = c
            .query_one("SELECT current_setting('port')", &[])
            .await
            .unwrap()
            .get(0);
        Ok(port.parse().unwrap())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for sub in ["standby", "primary"] {
            let data = self.dir.path().join(sub);
            let args = [
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ];
            let _ = if is_root() {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&self.pg_ctl)
                    .args(args)
                    .output()
            } else {
                Command::new(&self.pg_ctl).args(args).output()
            };
        }
    }
}

#[tokio::test]
async fn target_session_attrs_pick_the_primary_or_the_standby_like_libpq() {
    let pair = tokio::task::spawn_blocking(Pair::start).await.unwrap();
    let (p, s) = (pair.primary, pair.standby);
    assert_eq!(pair.lands_on(&[s, p], "any").await, Ok(s));
    assert_eq!(pair.lands_on(&[s, p], "primary").await, Ok(p));
    assert_eq!(pair.lands_on(&[s, p], "read-write").await, Ok(p));
    assert_eq!(pair.lands_on(&[p, s], "standby").await, Ok(s));
    assert_eq!(pair.lands_on(&[p, s], "read-only").await, Ok(s));
    assert_eq!(pair.lands_on(&[p, s], "prefer-standby").await, Ok(s));
    // prefer-standby settles for the primary when no standby is listed.
    assert_eq!(pair.lands_on(&[p], "prefer-standby").await, Ok(p));
    let err = pair.lands_on(&[p], "standby").await.unwrap_err();
    assert!(err.contains("not in hot standby"), "{err}");
    let err = pair.lands_on(&[p], "sometimes").await.unwrap_err();
    assert!(err.contains("invalid target_session_attrs"), "{err}");
    // load_balance_hosts=random spreads sessions over the list (both servers within 24
    // connections: the chance to miss one is 2^-23); without it the first always wins.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        seen.insert(
            pair.lands_on(&[p, s], "any&load_balance_hosts=random")
                .await
                .unwrap(),
        );
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    for _ in 0..4 {
        assert_eq!(pair.lands_on(&[p, s], "any").await, Ok(p));
    }

    // The binary, from PGTARGETSESSIONATTRS: no standby among the hosts is exit 75.
    let home = tempfile::tempdir().unwrap();
    let o = bare(home.path())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", p.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGTARGETSESSIONATTRS", "standby")
        .args(["migrate", "--status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 75);
    assert!(err.contains("target_session_attrs=standby"), "{err}");
    let o = bare(home.path())
        .env("PGHOST", "127.0.0.1,127.0.0.1")
        .env("PGPORT", format!("{p},{s}"))
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGTARGETSESSIONATTRS", "standby")
        .args(["migrate", "--status"])
        .output()
        .unwrap();
    assert_ok(&o);
}

// ------------------------------------------------------------------- sslrootcert=system

#[test]
fn sslrootcert_system_verifies_against_the_system_trust_store() {
    let ca =
        std::env::var("PGEPHEMERAL_CA").expect("PGEPHEMERAL_CA: run under scripts/pg-ephemeral");
    let home = tempfile::tempdir().unwrap();
    let url = |host: &str, extra: &str| {
        format!(
            "postgres://postgres@{host}:{}/postgres?sslrootcert=system{extra}",
            port()
        )
    };
    // The test CA in the trust store (SSL_CERT_FILE, as OpenSSL reads it): verify-full
    // (implied by sslrootcert=system) passes.
    let o = bare(home.path())
        .env("SSL_CERT_FILE", &ca)
        .env("DATABASE_URL", url("127.0.0.1", ""))
        .args(["migrate", "--status"])
        .output()
        .unwrap();
    assert_ok(&o);
    // verify-full is implied: a host the certificate does not name is refused.
    let o = bare(home.path())
        .env("SSL_CERT_FILE", &ca)
        .env("DATABASE_URL", url("127.0.0.2", ""))
        .args(["migrate", "--status"])
        .output()
        .unwrap();
    assert_error(&o, 75);
    // The platform's own store does not hold the test CA: refused (exit 2 instead when the
    // machine has no trust store at all).
    let o = bare(home.path())
        .env("DATABASE_URL", url("127.0.0.1", ""))
        .args(["migrate", "--status"])
        .output()
        .unwrap();
    let has_store = Path::new("/etc/ssl/certs/ca-certificates.crt").exists();
    let err = assert_error(&o, if has_store { 75 } else { 2 });
    assert!(err.contains("system"), "{err}");
    // A weaker sslmode with sslrootcert=system is refused, as libpq does.
    let o = bare(home.path())
        .env("DATABASE_URL", url("127.0.0.1", "&sslmode=require"))
        .args(["migrate", "--status"])
        .output()
        .unwrap();
    let err = assert_error(&o, 2);
    assert!(err.contains("verify-full"), "{err}");
}

#[tokio::test]
async fn a_timed_out_tenant_query_is_cancelled_over_a_unix_socket_too() {
    let db = TestDb::new().await;
    let c = db.client().await;
    enable_agent_globally(&c).await;
    let t = tenant(&c, "Slow", true).await;
    let cl = client_row(&c, t, "Slow Lending").await;
    contact(&c, t, cl, Some("a@slow.example"), None, true).await;
    // Hold the card table: the cycle blocks on its first read of cards.
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE kanban_cards IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let kv = format!(
        "host={} port={} user=postgres dbname={}",
        socket_dir(),
        port(),
        db.name
    );
    let out = db
        .tokio_cmd()
        .env("DATABASE_URL", &kv)
        .args(["run-cycle", "--json", "--tenant-timeout", "2"])
        .output()
        .await
        .unwrap();
    // Checked while the lock is still held: the blocked statement was cancelled.
    let waiting = count(
        &c,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND application_name = 'autopilot' AND state = 'active'",
    )
    .await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_of(&out)["tenants"][0]["status"], "timeout");
    assert_eq!(
        waiting, 0,
        "the timed-out query was abandoned, not cancelled"
    );
}
