//! [`DbSettings::resolve`]: the connection settings from `--database-url`/`DATABASE_URL` (a
//! URL or keyword=value string), the service it names and the libpq variables, in libpq's
//! order: the connection string, then the service (`service=`, `PGSERVICE`), then the `PG*`
//! variables, then defaults. Each step is a function of its own.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use super::conninfo::{
    add_host, default_host, env_nonempty, keyword_values, merge_config, parse_config,
    split_libpq_params, url_password, OURS,
};
use super::settings::{DbSettings, PoolerSetting, RootCert, SessionAttrs, SslMode, Target};
use crate::error::{register_secret, AppError};

/// The libpq-only parameters of the connection string (and service), last one wins.
type Params = Vec<(String, String)>;

fn param(params: &[(String, String)], k: &str) -> Option<String> {
    params
        .iter()
        .rev()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.clone())
}

impl DbSettings {
    /// From `--database-url`/`DATABASE_URL` when given, else from the libpq variables.
    pub fn resolve(url: Option<&str>) -> Result<DbSettings> {
        let (mut config, mut params) = connection_string(url)?;
        if let Some(pw) = config.get_password() {
            register_secret(&String::from_utf8_lossy(pw));
        }
        apply_service(&mut config, &mut params)?;
        let targets = targets(&mut config)?;
        let base = base_config(&config, &params);
        let (ssl_mode, ssl_root_cert) = tls_options(&params)?;
        let passfile = if base.get_password().is_none() {
            crate::libpq::passfile_path(param(&params, "passfile").as_deref())
                .map(|p| crate::libpq::read_passfile(&p))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let display = display(&base, &targets);
        Ok(DbSettings {
            base,
            targets,
            ssl_mode,
            ssl_root_cert,
            session_attrs: session_attrs(&params)?,
            connect_timeout: connect_timeout(&config)?,
            pooler: match env_nonempty("AUTOPILOT_POOLER") {
                Some(s) => s.parse()?,
                None => PoolerSetting::Auto,
            },
            load_balance: load_balance(&params)?,
            passfile,
            display,
        })
    }
}

/// The connection string split into what tokio-postgres parses and libpq's own parameters;
/// with none, the libpq variables must say where the database is.
fn connection_string(url: Option<&str>) -> Result<(Config, Params)> {
    if let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) {
        if let Some(pw) = url_password(url) {
            register_secret(&pw);
        }
        let (rest, params) = split_libpq_params(url)?;
        return Ok((parse_config(&rest)?, params));
    }
    // libpq would quietly try its default socket; an agent that may write should rather
    // say that nothing told it where its database is.
    const PG_VARS: &[&str] = &[
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSERVICE",
    ];
    if !PG_VARS.iter().any(|v| env_nonempty(v).is_some()) {
        return Err(AppError::usage(
            "no database configured: set DATABASE_URL (or --database-url, or the libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE, or PGSERVICE)",
        ));
    }
    Ok((Config::new(), Vec::new()))
}

/// The service's settings come after the connection string's, before the PG* ones.
fn apply_service(config: &mut Config, params: &mut Params) -> Result<()> {
    let Some(name) = param(params, "service").or_else(|| env_nonempty("PGSERVICE")) else {
        return Ok(());
    };
    let entries = crate::libpq::service(&name)?;
    for (k, v) in &entries {
        if k == "password" {
            register_secret(v);
        }
    }
    let (ours, theirs): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(k, _)| OURS.contains(&k.as_str()));
    let from = parse_config(&keyword_values(&theirs))
        .map_err(|e| AppError::usage(format!("service \"{name}\": {e}")))?;
    merge_config(config, &from);
    for (k, v) in ours {
        if param(params, &k).is_none() {
            params.push((k, v));
        }
    }
    Ok(())
}

/// The servers to try, from the hosts, host addresses and ports (lists, as libpq), with
/// `PGHOST`, `PGHOSTADDR` and `PGPORT` filling what the string left out.
fn targets(config: &mut Config) -> Result<Vec<Target>> {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = env_nonempty("PGHOST") {
            for h in hosts.split(',') {
                add_host(config, h.trim());
            }
        }
        if let Some(addrs) = env_nonempty("PGHOSTADDR") {
            for a in addrs.split(',') {
                let ip: IpAddr = a.trim().parse().map_err(|_| {
                    AppError::usage(format!("invalid PGHOSTADDR '{a}' (an IP address)"))
                })?;
                config.hostaddr(ip);
            }
        }
    }
    let ports = ports(config)?;
    let mut hosts: Vec<Host> = config.get_hosts().to_vec();
    let hostaddrs: Vec<IpAddr> = config.get_hostaddrs().to_vec();
    if hosts.is_empty() && hostaddrs.is_empty() {
        let h = default_host(ports.first().copied().unwrap_or(5432));
        let mut c = Config::new();
        add_host(&mut c, &h);
        hosts = c.get_hosts().to_vec();
    }
    let n = hosts.len().max(hostaddrs.len());
    if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
        return Err(AppError::usage(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            hostaddrs.len()
        )));
    }
    if ports.len() > 1 && ports.len() != n {
        return Err(AppError::usage(format!(
            "could not match {} port numbers to {} hosts",
            ports.len(),
            n
        )));
    }
    Ok((0..n)
        .map(|i| {
            let hostaddr = hostaddrs.get(i).copied();
            Target {
                host: hosts.get(i).cloned().unwrap_or_else(|| {
                    Host::Tcp(hostaddr.map(|a| a.to_string()).unwrap_or_default())
                }),
                hostaddr,
                port: ports.get(i).or(ports.first()).copied().unwrap_or(5432),
            }
        })
        .collect())
}

/// The string's ports, else `PGPORT` (a list; an empty entry is 5432).
fn ports(config: &Config) -> Result<Vec<u16>> {
    let mut ports: Vec<u16> = config.get_ports().to_vec();
    if ports.is_empty() {
        if let Some(list) = env_nonempty("PGPORT") {
            for p in list.split(',') {
                let p = p.trim();
                ports.push(if p.is_empty() {
                    5432
                } else {
                    p.parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| AppError::usage(format!("invalid PGPORT '{p}'")))?
                });
            }
        }
    }
    Ok(ports)
}

/// User, password, database, options and application name: everything but the servers.
fn base_config(config: &Config, params: &[(String, String)]) -> Config {
    let mut base = Config::new();
    let user = config
        .get_user()
        .map(str::to_string)
        .or_else(|| env_nonempty("PGUSER"))
        .or_else(|| env_nonempty("USER"))
        .unwrap_or_else(|| "postgres".to_string());
    base.user(&user);
    if let Some(pw) = config.get_password() {
        base.password(pw);
    } else if let Some(pw) = env_nonempty("PGPASSWORD") {
        register_secret(&pw);
        base.password(pw.as_bytes());
    }
    let dbname = config
        .get_dbname()
        .map(str::to_string)
        .or_else(|| env_nonempty("PGDATABASE"))
        .unwrap_or_else(|| user.clone());
    base.dbname(&dbname);
    if let Some(o) = config
        .get_options()
        .map(str::to_string)
        .or_else(|| env_nonempty("PGOPTIONS"))
    {
        base.options(&o);
    }
    base.application_name(
        config
            .get_application_name()
            .map(str::to_string)
            .or_else(|| env_nonempty("PGAPPNAME"))
            .or_else(|| param(params, "fallback_application_name"))
            .unwrap_or_else(|| "autopilot".to_string()),
    );
    base.keepalives(true);
    base
}

/// `connect_timeout`, else `PGCONNECT_TIMEOUT`, else 10 s; 0 waits without bound and, as
/// libpq, a timeout under 2 s is taken as 2 s.
fn connect_timeout(config: &Config) -> Result<Option<Duration>> {
    let t = match config.get_connect_timeout() {
        Some(t) => Some(*t),
        None => match env_nonempty("PGCONNECT_TIMEOUT") {
            Some(s) => {
                let secs: i64 = s.trim().parse().map_err(|_| {
                    AppError::usage(format!("invalid PGCONNECT_TIMEOUT '{s}' (seconds)"))
                })?;
                (secs > 0).then(|| Duration::from_secs(secs as u64))
            }
            None => Some(Duration::from_secs(10)),
        },
    };
    Ok(t.map(|t| t.max(Duration::from_secs(2))))
}

fn session_attrs(params: &[(String, String)]) -> Result<SessionAttrs> {
    match param(params, "target_session_attrs").or_else(|| env_nonempty("PGTARGETSESSIONATTRS")) {
        Some(s) => s.parse(),
        None => Ok(SessionAttrs::Any),
    }
}

fn load_balance(params: &[(String, String)]) -> Result<bool> {
    match param(params, "load_balance_hosts")
        .or_else(|| env_nonempty("PGLOADBALANCEHOSTS"))
        .as_deref()
    {
        None | Some("disable") => Ok(false),
        Some("random") => Ok(true),
        Some(other) => Err(AppError::usage(format!(
            "invalid load_balance_hosts '{other}' (expected disable or random)"
        ))),
    }
}

/// sslmode and the root certificate (`sslrootcert=system` needs verify-full; without one,
/// `~/.postgresql/root.crt` when it exists, as libpq).
fn tls_options(params: &[(String, String)]) -> Result<(SslMode, Option<RootCert>)> {
    let mut root = param(params, "sslrootcert")
        .or_else(|| env_nonempty("PGSSLROOTCERT"))
        .map(|p| {
            if p == "system" {
                RootCert::System
            } else {
                RootCert::File(PathBuf::from(p))
            }
        });
    let system = root == Some(RootCert::System);
    let mode = match param(params, "sslmode").or_else(|| env_nonempty("PGSSLMODE")) {
        Some(m) => {
            let mode: SslMode = m.parse()?;
            if system && mode != SslMode::VerifyFull {
                return Err(AppError::usage(format!(
                    "weak sslmode \"{m}\" may not be used with sslrootcert=system (use \"verify-full\")"
                )));
            }
            mode
        }
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if root.is_none() {
        if let Some(home) = env_nonempty("HOME") {
            let default = PathBuf::from(home).join(".postgresql/root.crt");
            if default.exists() {
                root = Some(RootCert::File(default));
            }
        }
    }
    Ok((mode, root))
}

/// `user@host,host:port/db`, never with the password: for messages.
fn display(base: &Config, targets: &[Target]) -> String {
    let hosts = targets
        .iter()
        .map(|t| t.host_name())
        .collect::<Vec<_>>()
        .join(",");
    let port = targets.first().map(|t| t.port).unwrap_or(5432);
    format!(
        "{}@{hosts}:{port}/{}",
        base.get_user().unwrap_or(""),
        base.get_dbname().unwrap_or("")
    )
}
