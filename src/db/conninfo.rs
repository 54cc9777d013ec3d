//! Connection strings as libpq reads them: keyword=value parsing, the libpq-only parameters
//! split out of URLs and keyword strings (tokio-postgres knows neither verify-* nor root
//! certs), merging a service's settings, default hosts, and the URL password to redact.

use std::path::Path;
use std::str::FromStr;

use anyhow::Result;
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::AppError;

pub(super) fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Connection keywords that tokio-postgres does not know (or knows only in part), read
/// here instead.
pub(super) const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslpassword",
    "service",
    "passfile",
    "target_session_attrs",
    "fallback_application_name",
    "load_balance_hosts",
];

/// Split a keyword=value connection string into its pairs (values quoted with '…' or
/// bare; `\` escapes the next character), as libpq reads it.
fn parse_keyword_values(conn: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(AppError::usage(format!(
                "invalid connection string: missing \"=\" after \"{key}\""
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c)
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(AppError::usage(
                            "invalid connection string: unterminated quoted string",
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// A keyword=value connection string of `pairs`, quoted for tokio-postgres.
pub(super) fn keyword_values(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split libpq-only parameters (sslmode, sslrootcert, service, …) out of a URL or
/// keyword=value connection string, returning the rest for tokio-postgres and the
/// extracted pairs.
pub(super) fn split_libpq_params(conn: &str) -> Result<(String, Vec<(String, String)>)> {
    let mut extracted = Vec::new();
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_string(), extracted));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if OURS.contains(&k) {
                let v = percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .to_string();
                extracted.push((k.to_string(), v));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, extracted))
    } else {
        let (ours, kept): (Vec<_>, Vec<_>) = parse_keyword_values(conn)?
            .into_iter()
            .partition(|(k, _)| OURS.contains(&k.as_str()));
        Ok((keyword_values(&kept), ours))
    }
}

/// tokio-postgres's reading of a connection string, its errors as bad input.
pub(super) fn parse_config(conn: &str) -> Result<Config> {
    Config::from_str(conn).map_err(|e| {
        AppError::usage(format!(
            "invalid connection settings: {}",
            crate::error::redact(&e.to_string())
        ))
    })
}

/// Fill what `config` leaves out from `from` (the service file's settings).
pub(super) fn merge_config(config: &mut Config, from: &Config) {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        for h in from.get_hosts() {
            match h {
                Host::Tcp(h) => {
                    config.host(h);
                }
                #[cfg(unix)]
                Host::Unix(p) => {
                    config.host_path(p);
                }
            }
        }
        for a in from.get_hostaddrs() {
            config.hostaddr(*a);
        }
    }
    if config.get_ports().is_empty() {
        for p in from.get_ports() {
            config.port(*p);
        }
    }
    if config.get_user().is_none() {
        if let Some(u) = from.get_user() {
            config.user(u);
        }
    }
    if config.get_password().is_none() {
        if let Some(p) = from.get_password() {
            config.password(p);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(d) = from.get_dbname() {
            config.dbname(d);
        }
    }
    if config.get_options().is_none() {
        if let Some(o) = from.get_options() {
            config.options(o);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(a) = from.get_application_name() {
            config.application_name(a);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(t) = from.get_connect_timeout() {
            config.connect_timeout(*t);
        }
    }
}

/// A host of a list: a Unix-socket directory when it starts with `/`.
pub(super) fn add_host(config: &mut Config, h: &str) {
    if h.starts_with('/') {
        #[cfg(unix)]
        config.host_path(h);
    } else {
        config.host(h);
    }
}

/// libpq's default server when none is named: its Unix-socket directory, where there is
/// one; else localhost.
pub(super) fn default_host(port: u16) -> String {
    let debian = Path::new(crate::libpq::DEFAULT_SOCKET_DIR);
    if debian.is_dir() {
        return debian.display().to_string();
    }
    if Path::new(&format!("/tmp/.s.PGSQL.{port}")).exists() {
        return "/tmp".to_string();
    }
    "localhost".to_string()
}

/// The password of a postgres:// URL, if any (to be redacted from messages).
pub(super) fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    Some(
        percent_encoding::percent_decode_str(pw)
            .decode_utf8_lossy()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_only_parameters_are_split_out_of_a_url() {
        let (rest, params) = split_libpq_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.crt",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(
            params,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca.crt".to_string())
            ]
        );
    }

    #[test]
    fn keyword_value_strings_keep_quoted_values_whole() {
        let (rest, params) = split_libpq_params(
            "host=/tmp port = 5 options='-c a=b -c x=\\'y\\'' service=crm user=u\\ v",
        )
        .unwrap();
        assert_eq!(params, vec![("service".to_string(), "crm".to_string())]);
        let c = Config::from_str(&rest).unwrap();
        assert_eq!(c.get_options(), Some("-c a=b -c x='y'"));
        assert_eq!(c.get_user(), Some("u v"));
        assert_eq!(c.get_ports(), &[5]);
    }

    #[test]
    fn password_is_found_in_a_url_for_redaction() {
        assert_eq!(
            url_password("postgres://u:s%40cret@h/db").as_deref(),
            Some("s@cret")
        );
        assert_eq!(url_password("postgres://u@h/db"), None);
    }
}
