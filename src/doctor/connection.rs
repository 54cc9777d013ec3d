//! Doctor's checks of the way to the database: where and how it connects (host or
//! socket, TLS and its verification, server version), whether a transaction-mode pooler
//! sits in between, and whether the host's tables accept the rows the agent writes.

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::{Check, Status};
use crate::db::{DbSettings, Sql, SslMode};

const CONNECTION: &str = crate::sql!("doctor/connection");

/// Where the settings point, from the configuration alone (never the password).
pub(super) fn target_details(db: &DbSettings) -> Value {
    use tokio_postgres::config::Host;
    let hosts: Vec<Value> = db
        .targets
        .iter()
        .map(|t| match &t.host {
            Host::Tcp(h) => json!({"host": h}),
            #[cfg(unix)]
            Host::Unix(p) => json!({"socket_dir": p.display().to_string()}),
        })
        .collect();
    let ports: Vec<u16> = db.targets.iter().map(|t| t.port).collect();
    json!({
        "hosts": hosts,
        "ports": ports,
        "database": db.dbname(),
        "user": db.user(),
        "sslmode": sslmode_text(db.ssl_mode),
        "sslrootcert": db.ssl_root_cert.as_ref().map(|p| p.to_string()),
    })
}

fn sslmode_text(m: SslMode) -> &'static str {
    match m {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// What the certificate check amounts to, as `DbSettings::tls` configures it.
fn verification_text(db: &DbSettings) -> &'static str {
    match (db.ssl_mode, db.ssl_root_cert.is_some()) {
        (SslMode::Disable, _) => "no TLS",
        (SslMode::VerifyFull, _) => "certificate chain and host name verified",
        (SslMode::VerifyCa, _) | (SslMode::Require, true) => {
            "certificate chain verified, host name not checked"
        }
        _ => "certificate not verified",
    }
}

fn is_local(db: &DbSettings) -> bool {
    use tokio_postgres::config::Host;
    db.targets.iter().all(|t| match &t.host {
        Host::Tcp(h) => h == "localhost" || h.starts_with("127.") || h == "::1",
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// Through a transaction-mode pooler or not (the same probe the commands use to choose
/// how they send statements; `AUTOPILOT_POOLER` overrides it).
pub(super) async fn pooler_check(db: &DbSettings) -> Result<Check> {
    use crate::db::{PoolerSetting, Pooling};
    let (summary, mode) = match db.pooler {
        PoolerSetting::Transaction => (
            "transaction-mode pooler (AUTOPILOT_POOLER=transaction): unnamed statements; \
             `migrate` needs the direct or session port"
                .to_string(),
            "transaction",
        ),
        PoolerSetting::Session => (
            "own server session (AUTOPILOT_POOLER=session): prepared statements reused".to_string(),
            "session",
        ),
        PoolerSetting::Auto => match crate::db::probe_pooling(db).await? {
            Pooling::Transaction { evidence } => (
                format!(
                    "transaction-mode pooler detected ({evidence}): unnamed statements; \
                     `migrate` needs the direct or session port"
                ),
                "transaction",
            ),
            Pooling::Session => (
                "direct connection or session-mode pooler (`migrate` may use it; statements are sent unnamed unless AUTOPILOT_POOLER=session)".to_string(),
                "session",
            ),
        },
    };
    Ok(Check::new(
        "pooler",
        Status::Ok,
        summary,
        None::<&str>,
        json!({ "pooling": mode }),
    ))
}

pub(super) async fn connection_check(c: &impl Sql, db: &DbSettings) -> Result<Check> {
    let r = c
        .query_one(CONNECTION, &[])
        .await
        .context("reading the session's settings")?;
    let version: String = r.get(0);
    let version_num: i32 = r.get(1);
    let database: String = r.get(2);
    let user: String = r.get(3);
    let tls: bool = r.get(4);
    let tls_version: Option<String> = r.get(5);
    let server_addr: Option<String> = r.get(6);
    let server_port: Option<i32> = r.get(7);
    let mut details = target_details(db);
    let where_ = where_text(db);
    let tls_text = tls_text(db, tls, tls_version.as_deref());
    if let Value::Object(m) = &mut details {
        m.insert("server_version".into(), json!(version));
        m.insert("server_version_num".into(), json!(version_num));
        m.insert("connected_database".into(), json!(database));
        m.insert("connected_user".into(), json!(user));
        m.insert("tls".into(), json!(tls));
        m.insert("tls_version".into(), json!(tls_version));
        m.insert("verification".into(), json!(verification_text(db)));
        m.insert("server_addr".into(), json!(server_addr));
        m.insert("server_port".into(), json!(server_port));
        // Slot for the pooler probe (see `database_checks`); null = not probed.
        m.insert("pooler".into(), Value::Null);
    }
    let summary = format!("{user}@{where_}/{database}, {tls_text}, PostgreSQL {version}");
    let verified = tls && matches!(verification_text(db), v if v.starts_with("certificate chain"));
    let (status, hint) = if version_num < 150_000 {
        (
            Status::Warn,
            Some("autopilot is built and tested for PostgreSQL 15 or later"),
        )
    } else if !is_local(db) && !verified {
        (
            Status::Warn,
            Some("a remote database without a verified certificate: set sslmode=verify-full and sslrootcert (or PGSSLMODE, PGSSLROOTCERT)"),
        )
    } else {
        (Status::Ok, None)
    };
    Ok(Check::new("connection", status, summary, hint, details))
}

/// The first server of the settings, as a person would name it.
fn where_text(db: &DbSettings) -> String {
    use tokio_postgres::config::Host;
    match db.targets.first() {
        #[cfg(unix)]
        Some(crate::db::Target {
            host: Host::Unix(p),
            port,
            ..
        }) => format!("socket {}/.s.PGSQL.{port}", p.display()),
        Some(crate::db::Target {
            host: Host::Tcp(h),
            port,
            ..
        }) => format!("{h}:{port}"),
        None => "localhost:5432".to_string(),
    }
}

fn tls_text(db: &DbSettings, tls: bool, tls_version: Option<&str>) -> String {
    if tls {
        format!(
            "TLS on ({}, sslmode={}, {})",
            tls_version.unwrap_or("?"),
            sslmode_text(db.ssl_mode),
            verification_text(db)
        )
    } else {
        format!("TLS off (sslmode={})", sslmode_text(db.ssl_mode))
    }
}

/// Whether the host's tables accept the rows the agent writes (the pre-flight of
/// `migrate`, [`crate::host_compat::inspect`]); rolled back, nothing is changed.
pub(super) async fn host_tables_check(db: &DbSettings) -> Result<Check> {
    let (mut client, task) = db.open().await?;
    let findings = crate::host_compat::inspect(&mut client).await;
    task.abort();
    let findings = findings?;
    Ok(if findings.is_empty() {
        Check::new(
            "host tables",
            Status::Ok,
            "the host's tables accept every row the agent writes".to_string(),
            None,
            json!({ "findings": [] }),
        )
    } else {
        let list: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        Check::new(
            "host tables",
            Status::Fail,
            format!("{} finding(s): {}", list.len(), list.join("; ")),
            Some("add a default or extend the CHECK list on the host table (see `autopilot migrate --status`)"),
            json!({ "findings": list }),
        )
    })
}
