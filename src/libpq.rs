//! The files libpq reads beside its connection string, read here the way libpq reads them
//! (tokio-postgres reads none of them): the connection service file (`PGSERVICEFILE`,
//! `~/.pg_service.conf`, `PGSYSCONFDIR/pg_service.conf`) and the password file
//! (`PGPASSFILE`, `~/.pgpass`, ignored with a warning when others may read it).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::AppError;

/// libpq's compiled-in system configuration directory on Debian (where
/// `pg_service.conf` lives when `PGSYSCONFDIR` is not set).
pub const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// libpq's default Unix-socket directory on Debian (also what a `localhost` line of the
/// password file matches).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// The keywords a service file may set (libpq's connection keywords that autopilot uses).
pub const SERVICE_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslpassword",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
    "client_encoding",
    "gssencmode",
    "krbsrvname",
    "requirepeer",
];

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn home() -> Option<PathBuf> {
    env_nonempty("HOME").map(PathBuf::from)
}

/// The settings of service `name`: from the user's service file first (`PGSERVICEFILE`,
/// else `~/.pg_service.conf`), then the system one (`PGSYSCONFDIR/pg_service.conf`). A
/// service found in neither is an error (libpq's "definition of service not found"): never
/// a silent fallback to defaults, which could be another database.
pub fn service(name: &str) -> Result<Vec<(String, String)>> {
    let user_file = env_nonempty("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pg_service.conf")));
    let sys_file = PathBuf::from(
        env_nonempty("PGSYSCONFDIR").unwrap_or_else(|| DEFAULT_SYSCONFDIR.to_string()),
    )
    .join("pg_service.conf");
    let mut searched = Vec::new();
    for file in user_file.into_iter().chain([sys_file]) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                searched.push(file.display().to_string());
                continue;
            }
            Err(e) => {
                return Err(AppError::usage(format!(
                    "cannot read service file {}: {e}",
                    file.display()
                )))
            }
        };
        searched.push(file.display().to_string());
        if let Some(entries) = parse_service_file(&text, name, &file)? {
            return Ok(entries);
        }
    }
    Err(AppError::usage(format!(
        "definition of service \"{name}\" not found (searched {})",
        searched.join(", ")
    )))
}

/// The entries of section `[name]` of a service file, or None when it has no such section.
pub fn parse_service_file(
    text: &str,
    name: &str,
    file: &Path,
) -> Result<Option<Vec<(String, String)>>> {
    let mut in_section = false;
    let mut found = false;
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if found {
                break;
            }
            let section = rest.strip_suffix(']').ok_or_else(|| {
                AppError::usage(format!(
                    "syntax error in service file {}, line {}",
                    file.display(),
                    i + 1
                ))
            })?;
            in_section = section == name;
            found |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(AppError::usage(format!(
                "syntax error in service file {}, line {}",
                file.display(),
                i + 1
            )));
        };
        let key = key.trim();
        if key == "service" {
            return Err(AppError::usage(format!(
                "nested service specifications not supported in service file {}, line {}",
                file.display(),
                i + 1
            )));
        }
        if !SERVICE_KEYWORDS.contains(&key) {
            return Err(AppError::usage(format!(
                "syntax error in service file {}, line {}: invalid connection option \"{key}\"",
                file.display(),
                i + 1
            )));
        }
        entries.push((key.to_string(), value.trim().to_string()));
    }
    Ok(found.then_some(entries))
}

/// One line of a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassEntry {
    host: String,
    port: String,
    dbname: String,
    user: String,
    password: String,
}

/// The password file to read: `passfile` from the connection settings, else `PGPASSFILE`,
/// else `~/.pgpass`.
pub fn passfile_path(from_settings: Option<&str>) -> Option<PathBuf> {
    from_settings
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| env_nonempty("PGPASSFILE").map(PathBuf::from))
        .or_else(|| home().map(|h| h.join(".pgpass")))
}

/// The entries of the password file at `path`: none when it does not exist, is not a
/// regular file, or (as libpq) when its group or others have any access, with a warning
/// on stderr then.
pub fn read_passfile(path: &Path) -> Vec<PassEntry> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if !meta.is_file() {
        eprintln!(
            "warning: password file \"{}\" is not a plain file",
            path.display()
        );
        return Vec::new();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                path.display()
            );
            return Vec::new();
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => parse_passfile(&text),
        Err(_) => Vec::new(),
    }
}

/// Parse password-file lines `host:port:dbname:user:password` (`\` escapes `:` and `\`;
/// `#` starts a comment line).
pub fn parse_passfile(text: &str) -> Vec<PassEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let mut it = fields.into_iter();
        out.push(PassEntry {
            host: it.next().unwrap_or_default(),
            port: it.next().unwrap_or_default(),
            dbname: it.next().unwrap_or_default(),
            user: it.next().unwrap_or_default(),
            password: it.next().unwrap_or_default(),
        });
    }
    out
}

/// The password of the first matching entry, as libpq matches them: `*` matches anything;
/// a connection over a Unix socket in the default directory also matches `localhost`.
pub fn lookup_password(
    entries: &[PassEntry],
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    let is_default_socket = host.starts_with('/')
        && (Path::new(host) == Path::new(DEFAULT_SOCKET_DIR) || host == "/tmp");
    let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    entries
        .iter()
        .find(|e| {
            (matches(&e.host, host) || (is_default_socket && e.host == "localhost"))
                && matches(&e.port, &port)
                && matches(&e.dbname, dbname)
                && matches(&e.user, user)
        })
        .map(|e| e.password.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_file_sections_are_read_and_other_sections_ignored() {
        let text = "# comment\n[other]\nhost=x\n\n[crm]\nhost = db.example\nport=6543\ndbname=crm\n[next]\nport=1\n";
        let e = parse_service_file(text, "crm", Path::new("f"))
            .unwrap()
            .unwrap();
        assert_eq!(
            e,
            vec![
                ("host".into(), "db.example".into()),
                ("port".into(), "6543".into()),
                ("dbname".into(), "crm".into())
            ]
        );
        assert!(parse_service_file(text, "nope", Path::new("f"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn service_file_with_an_unknown_keyword_is_an_error_naming_the_line() {
        let err = parse_service_file("[a]\nhots=x\n", "a", Path::new("/f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("hots"), "{err}");
    }

    #[test]
    fn passfile_lines_unescape_and_match_with_wildcards() {
        let e = parse_passfile(
            "# c\nh1:5432:db:u:p\\:w\\\\d\n*:*:*:bob:bobpw\nlocalhost:5433:*:u:sock\n",
        );
        assert_eq!(e.len(), 3);
        assert_eq!(
            lookup_password(&e, "h1", 5432, "db", "u").as_deref(),
            Some("p:w\\d")
        );
        assert_eq!(
            lookup_password(&e, "other", 1, "x", "bob").as_deref(),
            Some("bobpw")
        );
        assert_eq!(lookup_password(&e, "h1", 5433, "db", "u"), None);
        assert_eq!(
            lookup_password(&e, DEFAULT_SOCKET_DIR, 5433, "db", "u").as_deref(),
            Some("sock")
        );
    }
}
