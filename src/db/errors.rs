//! Connection failures: how one attempt to open a session ended, a driver error classified
//! as bad configuration (exit 2) or an outage (exit 75), and an error's text on one line.

use super::settings::DbSettings;
use crate::error::AppError;

impl DbSettings {
    /// A connection failure as an attempt outcome: a refused login or a missing password
    /// is final and bad configuration (exit 2), anything else lets the next server be tried.
    pub(super) fn classify(&self, e: &tokio_postgres::Error) -> Attempt {
        let text = crate::error::redact(&error_text(e));
        let code = e.as_db_error().map(|d| d.code().code().to_string());
        if matches!(code.as_deref(), Some("28P01" | "28000")) {
            return Attempt::Fatal(AppError::usage(format!(
                "cannot connect to database {}: {text} (check the user name and password: DATABASE_URL, PGPASSWORD or the password file)",
                self.display
            )));
        }
        if text.contains("password missing") {
            return Attempt::Fatal(AppError::usage(format!(
                "cannot connect to database {}: the server asks for a password and none is configured (set it in DATABASE_URL, PGPASSWORD or the password file ~/.pgpass / PGPASSFILE)",
                self.display
            )));
        }
        let mut detail = text;
        if let Some(hint) = self.tls_hint(e) {
            detail.push_str(" (");
            detail.push_str(&hint);
            detail.push(')');
        }
        Attempt::Failed(detail)
    }

    /// Map a connection failure to the exit-75 error, naming the target (never the password).
    pub fn unavailable(&self, e: &tokio_postgres::Error) -> anyhow::Error {
        match self.classify(e) {
            Attempt::Fatal(e) => e,
            Attempt::Failed(detail) => AppError::Unavailable(format!(
                "cannot connect to database {}: {detail}",
                self.display
            ))
            .into(),
            Attempt::Pg(e) => AppError::Unavailable(format!(
                "cannot connect to database {}: {}",
                self.display,
                crate::error::redact(&error_text(&e))
            ))
            .into(),
        }
    }
}

/// How one attempt to open a session ended, when it did not succeed.
pub(super) enum Attempt {
    /// Stop trying (bad configuration: exit 2).
    Fatal(anyhow::Error),
    /// Try the next server; why this one did not do.
    Failed(String),
    /// A driver error still to be classified.
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Self {
        Attempt::Pg(e)
    }
}

/// The error with its causes on one line.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    crate::error::strip_row_contents(&text)
}
