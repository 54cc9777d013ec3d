//! Error kinds a caller branches on (to choose the exit code), the exit-code mapping of
//! SPEC §1 in one place, and redaction of secrets from anything printed.

use std::sync::{Mutex, OnceLock};

/// Exit codes of SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// The work ran and something failed.
    Failure = 1,
    /// Bad usage or bad input, detected before any write.
    Usage = 2,
    /// The database could not be reached; cron may retry.
    Unavailable = 75,
}

/// Errors whose kind decides the exit code. Anything else is a failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
    #[error("lease lost: {0}")]
    LeaseLost(String),
}

impl AppError {
    pub fn usage(msg: impl Into<String>) -> anyhow::Error {
        AppError::Usage(msg.into()).into()
    }
    pub fn failed(msg: impl Into<String>) -> anyhow::Error {
        AppError::Failed(msg.into()).into()
    }
}

/// The exit code for an error that ended a command.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(app) = cause.downcast_ref::<AppError>() {
            return match app {
                AppError::Usage(_) => Exit::Usage as u8,
                AppError::Unavailable(_) => Exit::Unavailable as u8,
                AppError::Failed(_) | AppError::LeaseLost(_) => Exit::Failure as u8,
            };
        }
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            if is_connection_error(pg) {
                return Exit::Unavailable as u8;
            }
            // A bounded wait that ran out (lock_timeout, statement_timeout, or the client's
            // cancel, see crate::deadline): temporary, cron may retry.
            if pg
                .code()
                .is_some_and(|c| matches!(c.code(), "55P03" | "57014"))
            {
                return Exit::Unavailable as u8;
            }
        }
    }
    Exit::Failure as u8
}

/// True when a PostgreSQL error means the server could not be reached or the connection
/// broke, as opposed to an error of a statement.
pub fn is_connection_error(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(db) = err.as_db_error() {
        // Class 08 (connection exception), 57P01-57P03 (admin shutdown, cannot connect now).
        let code = db.code().code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    // Errors without a server message at this level are I/O, TLS or timeouts.
    std::error::Error::source(err)
        .map(|s| s.downcast_ref::<std::io::Error>().is_some())
        .unwrap_or(false)
        || err.to_string().contains("timed out")
        || err.to_string().starts_with("error connecting")
        || err.to_string().starts_with("error performing TLS")
}

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret (a password) so that [`redact`] removes it from anything printed.
pub fn register_secret(secret: &str) {
    if secret.len() >= 3 {
        if let Ok(mut s) = secrets().lock() {
            if !s.iter().any(|x| x == secret) {
                s.push(secret.to_string());
                // Percent-encoded form, as it would appear inside a URL.
                let enc = percent_encoding::utf8_percent_encode(
                    secret,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                if enc != secret {
                    s.push(enc);
                }
            }
        }
    }
}

/// Replace every registered secret in `text` with `***`, and drop PostgreSQL's DETAIL
/// (see [`strip_row_contents`]).
pub fn redact(text: &str) -> String {
    let mut out = strip_row_contents(text);
    if let Ok(s) = secrets().lock() {
        for secret in s.iter() {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Drop PostgreSQL's DETAIL and what follows it from an error text. The DETAIL of a failed
/// write carries the row's values ("Failing row contains (...)", "Key (email)=(...)"): a
/// contact's address, an e-mail body. It is always the last part of a server error's text
/// (only a HINT may follow, lost with it), so everything from it on goes.
pub fn strip_row_contents(text: &str) -> String {
    match text.find("\nDETAIL: ").or_else(|| text.find(" DETAIL: ")) {
        Some(at) => text[..at].trim_end().to_string(),
        None => text.to_string(),
    }
}
