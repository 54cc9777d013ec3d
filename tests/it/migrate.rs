//! `autopilot migrate`: applies in order, records checksums, is a no-op the second time,
//! serializes concurrent runs, refuses drift, and never prints a password.

use crate::common::*;
use predicates::prelude::*;

#[tokio::test]
async fn migrate_applies_every_file_to_an_empty_database_and_records_it() {
    let db = TestDb::empty().await;
    let out = db.cmd().arg("migrate").assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let n = autopilot::schema::MIGRATIONS.len();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("applied ")).count(),
        n,
        "{stdout}"
    );
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT version, checksum, execution_ms FROM autopilot_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), n);
    for (row, m) in rows.iter().zip(autopilot::schema::embedded()) {
        assert_eq!(row.get::<_, i64>(0), m.version);
        assert_eq!(row.get::<_, String>(1), m.checksum);
        assert!(row.get::<_, i64>(2) >= 0);
    }
}

#[tokio::test]
async fn second_migrate_is_a_no_op() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let before: Vec<chrono::DateTime<chrono::Utc>> = c
        .query(
            "SELECT applied_at FROM autopilot_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.cmd()
        .arg("migrate")
        .assert()
        .success()
        .stdout(predicate::str::contains("applied ").not());
    let after: Vec<chrono::DateTime<chrono::Utc>> = c
        .query(
            "SELECT applied_at FROM autopilot_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn eight_concurrent_migrates_all_succeed_and_apply_each_file_once() {
    let db = TestDb::empty().await;
    let mut children = Vec::new();
    for _ in 0..8 {
        children.push(db.tokio_cmd().arg("migrate").output());
    }
    let outputs = futures::future::join_all(children).await;
    let mut applied_lines = 0;
    for out in outputs {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        applied_lines += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("applied "))
            .count();
    }
    assert_eq!(applied_lines, autopilot::schema::MIGRATIONS.len());
    let c = db.client().await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM autopilot_migrations").await,
        autopilot::schema::MIGRATIONS.len() as i64
    );
}

#[tokio::test]
async fn changed_applied_migration_fails_with_exit_1_naming_the_file() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let first = &autopilot::schema::embedded()[1];
    c.execute(
        "UPDATE autopilot_migrations SET checksum = 'deadbeef' WHERE version = $1",
        &[&first.version],
    )
    .await
    .unwrap();
    db.cmd()
        .arg("migrate")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(first.file.as_str()))
        .stderr(predicate::str::starts_with("error: "));
    db.cmd()
        .args(["migrate", "--status"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("changed"));
}

#[tokio::test]
async fn status_and_dry_run_list_pending_and_change_nothing() {
    let db = TestDb::empty().await;
    db.cmd()
        .args(["migrate", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would apply"));
    db.cmd()
        .args(["migrate", "--status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("pending"));
    let c = db.client().await;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        0,
        "dry-run/status must not create anything"
    );
}

#[tokio::test]
async fn migrate_applies_over_existing_host_tables_with_extra_columns() {
    let db = TestDb::empty().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE tenants (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, plan text DEFAULT 'pro');
         CREATE TABLE profiles (id uuid PRIMARY KEY, tenant_id uuid REFERENCES tenants(id), email text, avatar_url text);
         CREATE TABLE clients (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL REFERENCES tenants(id),
                               company_name text, crm_source text);
         CREATE TABLE contacts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL REFERENCES tenants(id),
                                client_id uuid REFERENCES clients(id), email text, linkedin text);
         CREATE TABLE orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL REFERENCES tenants(id),
                              client_id uuid, fee_amount numeric(12,2), loan_number text);
         CREATE TABLE products (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, name text, sku text);
         CREATE TABLE kanban_cards (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, type text, title text, color text);
         CREATE TABLE email_suppressions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL, email text, source text);
         INSERT INTO tenants (name) VALUES ('existing');
         INSERT INTO clients (tenant_id, company_name, crm_source) SELECT id, 'Acme', 'hubspot' FROM tenants;",
    )
    .await
    .unwrap();
    db.cmd().arg("migrate").assert().success();
    // Extra host columns and rows are untouched; the listed columns were added.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM clients WHERE crm_source = 'hubspot'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM tenants WHERE plan = 'pro' AND agent_enabled = false"
        )
        .await,
        1
    );
    for (table, column) in [
        ("tenants", "agent_settings"),
        ("clients", "credit_limit"),
        ("contacts", "is_primary"),
        ("orders", "borrower_email"),
        ("products", "min_price"),
        ("kanban_cards", "action_payload"),
        ("email_suppressions", "reason"),
        ("profiles", "full_name"),
    ] {
        let n = c
            .query_one(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
                &[&table, &column],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(n, 1, "{table}.{column} missing");
    }
    // Still re-runnable.
    db.cmd().arg("migrate").assert().success();
}

#[tokio::test]
async fn every_migration_file_can_be_run_twice() {
    // The review promised idempotent migrations; its CREATE POLICY could not run twice.
    let db = TestDb::new().await;
    let c = db.client().await;
    for (name, sql) in autopilot::schema::MIGRATIONS {
        c.batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
            .await
            .unwrap_or_else(|e| panic!("re-running {name}: {e:?}"));
    }
}

#[test]
fn unreachable_database_exits_75_with_one_line_and_no_password() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://agent:Sup3rS3cretPw@127.0.0.1:1/crm",
        )
        .arg("migrate")
        .assert()
        .code(75);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(!stderr.contains("Sup3rS3cretPw"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[tokio::test]
async fn wrong_password_is_refused_without_printing_it() {
    // pg-ephemeral requires a password (scram) for members of `password_users`.
    let admin = connect(&base_url()).await;
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pw_tester') THEN
                 CREATE ROLE pw_tester LOGIN PASSWORD 'right-password-1' IN ROLE password_users;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
        )
        .await
        .unwrap();
    let base = base_url();
    let hostpart = base.split('@').nth(1).unwrap();
    let url = format!("postgres://pw_tester:Wr0ngPassw0rdXYZ@{hostpart}");
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", &url)
        .arg("migrate")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(!stderr.contains("Wr0ngPassw0rdXYZ"), "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    // A refused login is a configuration error (SPEC 1: exit 2), not an outage to retry.
    assert_eq!(out.get_output().status.code(), Some(2));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // The same through PGPASSWORD.
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env("PGHOST", hostpart.split(':').next().unwrap())
        .env(
            "PGPORT",
            hostpart
                .split(':')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap(),
        )
        .env("PGUSER", "pw_tester")
        .env("PGPASSWORD", "Wr0ngPassw0rdXYZ")
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", "disable")
        .arg("migrate")
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(!stderr.contains("Wr0ngPassw0rdXYZ"), "{stderr}");
}

#[test]
fn no_database_configured_exits_2_naming_database_url() {
    let out = assert_cmd::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["run-cycle"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.starts_with("error: ") && stderr.contains("DATABASE_URL"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_closed_stdout_pipe_ends_the_process_quietly_without_a_panic() {
    // `autopilot … | head`: the reader is gone before autopilot writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[tokio::test]
async fn commands_refuse_a_database_whose_schema_is_behind_the_binary() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let last = autopilot::schema::embedded().pop().unwrap();
    c.execute(
        "DELETE FROM autopilot_migrations WHERE version = $1",
        &[&last.version],
    )
    .await
    .unwrap();
    for args in [
        vec!["run-cycle"],
        vec!["check-engagement"],
        vec!["process-orders"],
        vec!["status"],
    ] {
        let out = db.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("autopilot migrate") && stderr.contains(last.file.as_str()),
            "{args:?}: {stderr}"
        );
    }
    // After migrating, they work again.
    db.cmd().arg("migrate").assert().success();
    db.cmd().arg("check-engagement").assert().success();
}
