//! Test harness shared by the integration tests.
//!
//! The suite runs against a real PostgreSQL: `make test` starts a throwaway server
//! (scripts/pg-ephemeral) and exports AUTOPILOT_TEST_DATABASE_URL. The embedded migrations
//! are applied once per migration set to a template database (named after their
//! checksums); every test clones it (`CREATE DATABASE … TEMPLATE …`, ~20 ms) and drops its
//! clone at the end, so tests run in parallel without sharing state.
#![allow(dead_code)]

use std::sync::OnceLock;

use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_autopilot");

/// Superuser URL of the throwaway server (its `postgres` database).
pub fn base_url() -> String {
    std::env::var("AUTOPILOT_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "AUTOPILOT_TEST_DATABASE_URL is not set: run the tests with `make test`, which starts a \
             throwaway PostgreSQL (scripts/pg-ephemeral cargo test)"
        )
    })
}

/// URL of database `db` on the test server.
pub fn url_for(db: &str) -> String {
    let base = base_url();
    let (prefix, rest) = base.rsplit_once('/').expect("database URL with a path");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{prefix}/{db}{query}")
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn migrations_fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, sql) in autopilot::schema::MIGRATIONS {
        h.update(name.as_bytes());
        h.update(sql.as_bytes());
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// Build (once per migration set, across test processes) the migrated template.
async fn build_template() -> String {
    let name = format!("autopilot_tpl_{}", migrations_fingerprint());
    let admin = connect(&base_url()).await;
    // Serialize template builds of concurrent test processes.
    admin
        .execute("SELECT pg_advisory_lock(727274)", &[])
        .await
        .unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["-q", "migrate"])
            .env("DATABASE_URL", url_for(&building))
            .output()
            .expect("running autopilot migrate");
        assert!(
            out.status.success(),
            "migrating the template failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .unwrap();
    }
    admin
        .execute("SELECT pg_advisory_unlock(727274)", &[])
        .await
        .unwrap();
    name
}

pub fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(build_template())
        })
        .join()
        .expect("building the template database")
    })
}

/// A database of its own for one test, cloned from the migrated template (or empty).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh, fully migrated database.
    pub async fn new() -> TestDb {
        let tpl = template().to_string();
        Self::create(Some(&tpl)).await
    }

    /// A fresh empty database (nothing migrated).
    pub async fn empty() -> TestDb {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let name = format!("t_{}", Uuid::new_v4().simple());
        let admin = connect(&base_url()).await;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
            None => format!("CREATE DATABASE {name}"),
        };
        // A clone fails while another session is still connected to the template (only
        // during its build), so retry briefly.
        let mut tries = 0;
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("creating test database: {e}"),
            }
        }
        let url = url_for(&name);
        TestDb { name, url }
    }

    /// A superuser connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// A connection acting as `authenticated` with JWT subject `user` (as PostgREST does).
    pub async fn as_authenticated(&self, user: Uuid) -> Client {
        let c = self.client().await;
        c.batch_execute(&format!(
            "SET ROLE authenticated; SET request.jwt.claim.sub = '{user}';"
        ))
        .await
        .unwrap();
        c
    }

    /// A connection acting as `anon`.
    pub async fn as_anon(&self) -> Client {
        let c = self.client().await;
        c.batch_execute("SET ROLE anon").await.unwrap();
        c
    }

    /// A connection acting as `service_role`.
    pub async fn as_service_role(&self) -> Client {
        let c = self.client().await;
        c.batch_execute("SET ROLE service_role").await.unwrap();
        c
    }

    /// `autopilot` pointed at this database, with a clean environment.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.url)
            .env("RUST_LOG", "warn")
            .timeout(std::time::Duration::from_secs(120));
        cmd
    }

    /// The same as a tokio process (for tests that signal or race processes).
    pub fn tokio_cmd(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.url)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees; use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((c, conn)) = tokio_postgres::connect(&base_url(), NoTls).await {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------
// Factories: small rows with sensible defaults; each returns the new id.

pub async fn tenant(c: &Client, name: &str, agent_enabled: bool) -> Uuid {
    c.query_one(
        "INSERT INTO tenants (name, agent_enabled) VALUES ($1, $2) RETURNING id",
        &[&name, &agent_enabled],
    )
    .await
    .unwrap()
    .get(0)
}

pub async fn tenant_with_settings(c: &Client, name: &str, settings: serde_json::Value) -> Uuid {
    c.query_one(
        "INSERT INTO tenants (name, agent_enabled, agent_settings) VALUES ($1, true, $2) RETURNING id",
        &[&name, &settings],
    )
    .await
    .unwrap()
    .get(0)
}

pub async fn profile(c: &Client, tenant: Uuid) -> Uuid {
    c.query_one(
        "INSERT INTO profiles (tenant_id, email, full_name) VALUES ($1, 'ops@example.com', 'Ops') RETURNING id",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

pub async fn client_row(c: &Client, tenant: Uuid, name: &str) -> Uuid {
    c.query_one(
        "INSERT INTO clients (tenant_id, company_name) VALUES ($1, $2) RETURNING id",
        &[&tenant, &name],
    )
    .await
    .unwrap()
    .get(0)
}

/// A contact of `client`; `email` None means no address.
pub async fn contact(
    c: &Client,
    tenant: Uuid,
    client: Uuid,
    email: Option<&str>,
    title: Option<&str>,
    is_primary: bool,
) -> Uuid {
    c.query_one(
        "INSERT INTO contacts (tenant_id, client_id, first_name, last_name, email, title, is_primary)
         VALUES ($1, $2, 'Pat', 'Doe', $3, $4, $5) RETURNING id",
        &[&tenant, &client, &email, &title, &is_primary],
    )
    .await
    .unwrap()
    .get(0)
}

/// A complete, valid order (card payment) of `client`; adjust columns with UPDATE.
pub async fn order(c: &Client, tenant: Uuid, client: Uuid) -> Uuid {
    c.query_one(
        "INSERT INTO orders (tenant_id, client_id, fee_amount, total_amount, tech_fee, payment_method,
                             property_address, property_city, property_state, property_zip,
                             borrower_name, borrower_email, borrower_phone,
                             property_contact_name, property_contact_phone)
         VALUES ($1, $2, 450, 475, 25, 'card', '1 Main St', 'Springfield', 'IL', '62701',
                 'Bo Rower', 'bo@example.com', '555-0100', 'Pat Contact', '555-0101')
         RETURNING id",
        &[&tenant, &client],
    )
    .await
    .unwrap()
    .get(0)
}

/// Turn the global kill switch off (agent allowed to run).
pub async fn enable_agent_globally(c: &Client) {
    c.execute(
        "UPDATE system_config SET value = jsonb_set(value, '{global_enabled}', 'true') WHERE key = 'agent_config'",
        &[],
    )
    .await
    .unwrap();
}

/// The one JSON document a `--json` command printed on stdout.
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// [`count`] with parameters.
pub async fn count_where(
    c: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    c.query_one(sql, params).await.unwrap().get(0)
}

/// The race helper: `n` racers, each on its own connection to `url`, set up by `prepare`
/// (e.g. a session time zone), released together by a barrier, then each runs `act`.
/// Returns every racer's result, in racer order. The racers are futures of this task: the
/// race happens in the server, between `n` sessions whose statements arrive together.
pub async fn race<T, P, A>(url: &str, n: usize, prepare: P, act: A) -> Vec<T>
where
    P: AsyncFn(usize, &Client),
    A: AsyncFn(usize, &Client) -> T,
{
    let barrier = tokio::sync::Barrier::new(n);
    let (barrier, prepare, act) = (&barrier, &prepare, &act);
    let racers = (0..n).map(|i| async move {
        let c = connect(url).await;
        prepare(i, &c).await;
        barrier.wait().await;
        act(i, &c).await
    });
    futures::future::join_all(racers).await
}

/// Poll `count_sql` (a `SELECT count(*)`) until it returns at least `n`, or fail naming
/// `what` after 60 s. For waiting on another session (a lock wait, a session gone), never
/// on time passing.
pub async fn wait_for_count(c: &Client, count_sql: &str, n: i64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = count(c, count_sql).await;
        if got >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {got} of {n} after 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sessions of the binary (`application_name = 'autopilot'`) on this test's database that
/// wait on a lock.
pub const AUTOPILOT_LOCK_WAITS: &str = "SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'autopilot'
      AND wait_event_type = 'Lock'";

/// Whether no session of the binary is left on this test's database (1 when none is).
pub const NO_AUTOPILOT_SESSION: &str = "SELECT (count(*) = 0)::int::int8 FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'autopilot'";

/// Read the child's stderr until a line contains `needle`; returns the lines read, and
/// keeps draining in the background so the child never blocks on a full pipe.
pub async fn wait_for_stderr_line(
    stderr: tokio::process::ChildStderr,
    needle: &str,
) -> tokio::task::JoinHandle<Vec<String>> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (tx, rx) = tokio::sync::oneshot::channel();
    let needle = needle.to_string();
    let handle = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            let hit = line.contains(&needle);
            seen.push(line);
            if hit {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
        seen
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), rx)
        .await
        .expect("the expected log line never came")
        .expect("stderr closed before the expected log line");
    handle
}

/// A tenant with the agent enabled, one client and `overdue` contacts
/// (`contact{i}@<name>.example`, the first one primary) whose clocks are 10 days overdue;
/// with `blank`, one more overdue contact without an e-mail address.
pub async fn tenant_with_overdue_contacts(
    c: &Client,
    name: &str,
    overdue: usize,
    blank: bool,
) -> Uuid {
    let t = tenant(c, name, true).await;
    let cl = client_row(c, t, &format!("{name} Lending")).await;
    for i in 0..overdue {
        let email = format!(
            "contact{i}@{}.example",
            name.to_lowercase().replace(' ', "")
        );
        contact(c, t, cl, Some(&email), Some("Loan Officer"), i == 0).await;
    }
    if blank {
        contact(c, t, cl, None, Some("Processor"), false).await;
    }
    c.execute(
        "INSERT INTO engagement_clocks (tenant_id, client_id, contact_id, next_touch_due)
         SELECT tenant_id, client_id, id, now() - interval '10 days' FROM contacts WHERE tenant_id = $1",
        &[&t],
    )
    .await
    .unwrap();
    t
}

/// How many runs of this database are in each status.
pub async fn runs_by_status(c: &Client) -> std::collections::BTreeMap<String, i64> {
    c.query(
        "SELECT status, count(*) FROM agent_autonomous_runs GROUP BY status",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A status → count map for comparing with [`runs_by_status`].
pub fn statuses(pairs: &[(&str, i64)]) -> std::collections::BTreeMap<String, i64> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// Send `sig` (e.g. `TERM`, `INT`) to the process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}
