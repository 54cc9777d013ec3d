//! The data of validation: an order as the rules read it, with its product and client,
//! and what validating it yields (auto-fixes, findings, validity flags).

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// The columns of an order the rules read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub client_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub status: String,
    pub fee_amount: Option<Decimal>,
    pub total_amount: Option<Decimal>,
    pub tech_fee: Option<Decimal>,
    pub payment_method: Option<String>,
    pub property_address: Option<String>,
    pub property_city: Option<String>,
    pub property_state: Option<String>,
    pub property_zip: Option<String>,
    pub borrower_name: Option<String>,
    pub borrower_email: Option<String>,
    pub borrower_phone: Option<String>,
    pub property_contact_name: Option<String>,
    pub property_contact_phone: Option<String>,
}

impl OrderRow {
    pub fn is_cancelled(&self) -> bool {
        self.status.trim().eq_ignore_ascii_case("cancelled")
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Product {
    pub id: Uuid,
    pub min_price: Option<Decimal>,
    pub max_price: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: Uuid,
    pub is_active: bool,
    pub credit_limit: Decimal,
    pub balance: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
    /// Error and critical findings make the order an exception; warnings do not.
    pub fn blocks(self) -> bool {
        self >= Severity::Error
    }
}

/// A safe correction applied to the order before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoFix {
    pub field: &'static str,
    pub from: Option<Decimal>,
    pub to: Decimal,
    pub rule: &'static str,
}

impl AutoFix {
    /// As recorded in `order_processing_queue.auto_fixes` (amounts as decimal strings).
    pub fn to_json(&self) -> Value {
        json!({
            "field": self.field,
            "from": self.from.map(|d| d.to_string()),
            "to": self.to.to_string(),
            "rule": self.rule,
        })
    }
}

/// One `order_processing_exceptions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub exception_type: &'static str,
    pub severity: Severity,
    pub code: &'static str,
    pub field: Option<&'static str>,
    pub message: String,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub auto_fixes: Vec<AutoFix>,
    pub findings: Vec<Finding>,
    pub pricing_valid: bool,
    pub credit_valid: bool,
    pub requirements_valid: bool,
}

impl Validation {
    /// `validated` when nothing blocks (warnings allowed), else `exception`.
    pub fn status(&self) -> &'static str {
        if self.findings.iter().any(|f| f.severity.blocks()) {
            "exception"
        } else {
            "validated"
        }
    }

    /// The value of `field` after the auto-fixes (None when no fix touched it).
    pub fn fixed(&self, field: &str) -> Option<Decimal> {
        self.auto_fixes
            .iter()
            .rev()
            .find(|f| f.field == field)
            .map(|f| f.to)
    }
}
