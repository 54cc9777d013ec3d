//! The validation of one order (SPEC §6), pure: the safe auto-fixes first, then [`RULES`],
//! a table of rules that each judge the corrected order on their own and raise at most one
//! finding. The validity flags and the entry's status follow from the findings.
//!
//! Decisions the SPEC leaves open:
//! - credit: a `bill` order whose total equals exactly the available credit
//!   (credit_limit − balance) is allowed; use of exactly 80 % of the limit is not a warning
//!   (the warning needs strictly more); no utilisation warning when the limit is 0 or the
//!   order is already over the limit (that is the error). Each order is checked against
//!   the client's recorded balance, which does not include the order itself.
//! - a missing total counts as "below the fee" and is set to the fee (when the fee is
//!   positive; a non-positive fee is an error and nothing is auto-fixed from it).

use rust_decimal::Decimal;
use serde_json::{json, Value};

pub use super::model::*;

// Stable rule ids (`order_processing_exceptions.code`).
pub const CODE_FEE_NOT_POSITIVE: &str = "pricing.fee_not_positive";
pub const CODE_FEE_OUTSIDE_RANGE: &str = "pricing.fee_outside_range";
pub const CODE_CLIENT_MISSING: &str = "credit.client_missing";
pub const CODE_CLIENT_INACTIVE: &str = "credit.client_inactive";
pub const CODE_CREDIT_EXCEEDED: &str = "credit.limit_exceeded";
pub const CODE_CREDIT_HIGH_USE: &str = "credit.high_utilization";
pub const CODE_ADDRESS_MISSING: &str = "requirements.property_address_missing";
pub const CODE_BORROWER_CONTACT_MISSING: &str = "requirements.borrower_contact_missing";
pub const CODE_CITY_MISSING: &str = "requirements.property_city_missing";
pub const CODE_STATE_MISSING: &str = "requirements.property_state_missing";
pub const CODE_ZIP_MISSING: &str = "requirements.property_zip_missing";
pub const CODE_BORROWER_NAME_MISSING: &str = "requirements.borrower_name_missing";
pub const CODE_CONTACT_PHONE_MISSING: &str = "requirements.property_contact_phone_missing";

/// Every code [`validate`] can raise (the codes of [`RULES`], in order): the findings the
/// agent owns (and may resolve).
pub const ALL_CODES: &[&str] = &[
    CODE_FEE_NOT_POSITIVE,
    CODE_FEE_OUTSIDE_RANGE,
    CODE_CLIENT_MISSING,
    CODE_CLIENT_INACTIVE,
    CODE_CREDIT_EXCEEDED,
    CODE_CREDIT_HIGH_USE,
    CODE_ADDRESS_MISSING,
    CODE_BORROWER_CONTACT_MISSING,
    CODE_CITY_MISSING,
    CODE_STATE_MISSING,
    CODE_ZIP_MISSING,
    CODE_BORROWER_NAME_MISSING,
    CODE_CONTACT_PHONE_MISSING,
];

/// What the rules judge: the order after the auto-fixes, with its product and client.
pub struct Subject<'a> {
    pub order: &'a OrderRow,
    /// The total after the auto-fixes.
    pub total: Option<Decimal>,
    pub product: Option<&'a Product>,
    pub client: Option<&'a Client>,
}

impl Subject<'_> {
    fn fee_positive(&self) -> bool {
        self.order.fee_amount.is_some_and(|f| f > Decimal::ZERO)
    }
    /// Only orders billed to the client use its credit.
    fn billed(&self) -> bool {
        self.order
            .payment_method
            .as_deref()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("bill"))
    }
    /// The billed order's client, when it has one.
    fn billed_client(&self) -> Option<&Client> {
        self.client.filter(|_| self.billed())
    }
}

/// A rule fired: its message and details.
type Hit = (String, Value);

/// One row of the rule table: what a finding of this rule is, and when it fires.
pub struct Rule {
    pub code: &'static str,
    pub exception_type: &'static str,
    pub severity: Severity,
    pub field: &'static str,
    pub check: fn(&Subject) -> Option<Hit>,
}

impl Rule {
    fn apply(&self, s: &Subject) -> Option<Finding> {
        (self.check)(s).map(|(message, details)| Finding {
            exception_type: self.exception_type,
            severity: self.severity,
            code: self.code,
            field: Some(self.field),
            message,
            details,
        })
    }
}

fn blank(v: &Option<String>) -> bool {
    v.as_deref().map(|s| s.trim().is_empty()).unwrap_or(true)
}

fn dec(d: Option<Decimal>) -> Value {
    d.map(|d| Value::String(d.to_string()))
        .unwrap_or(Value::Null)
}

fn bound(d: Option<Decimal>, none: &str) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| none.into())
}

fn fee_not_positive(s: &Subject) -> Option<Hit> {
    let fee = s.order.fee_amount;
    let message = match fee {
        _ if s.fee_positive() => return None,
        None => "Order has no fee".to_string(),
        Some(f) => format!("Order fee {f} is not positive"),
    };
    Some((message, json!({ "fee_amount": dec(fee) })))
}

fn fee_outside_range(s: &Subject) -> Option<Hit> {
    let (f, p) = (s.order.fee_amount.filter(|_| s.fee_positive())?, s.product?);
    let below = p.min_price.is_some_and(|min| f < min);
    let above = p.max_price.is_some_and(|max| f > max);
    if !(below || above) {
        return None;
    }
    let message = format!(
        "Order fee {f} is {} the product's price range ({} – {})",
        if below { "below" } else { "above" },
        bound(p.min_price, "no minimum"),
        bound(p.max_price, "no maximum"),
    );
    let details = json!({
        "fee_amount": f.to_string(), "min_price": dec(p.min_price),
        "max_price": dec(p.max_price), "product_id": p.id,
    });
    Some((message, details))
}

fn client_missing(s: &Subject) -> Option<Hit> {
    (s.billed() && s.client.is_none()).then(|| {
        let details = json!({ "client_id": s.order.client_id });
        ("Billed order has no client to bill".to_string(), details)
    })
}

fn client_inactive(s: &Subject) -> Option<Hit> {
    let c = s.billed_client().filter(|c| !c.is_active)?;
    let details = json!({ "client_id": c.id });
    Some(("Billed order's client is inactive".to_string(), details))
}

/// The credit a billed order would use: (client, total, available credit, details).
fn credit_use<'a>(s: &'a Subject) -> Option<(&'a Client, Decimal, Decimal, Value)> {
    let c = s.billed_client()?;
    let t = s.total.unwrap_or(Decimal::ZERO);
    let available = c.credit_limit - c.balance;
    let details = json!({
        "client_id": c.id, "total_amount": t.to_string(),
        "credit_limit": c.credit_limit.to_string(), "balance": c.balance.to_string(),
        "available_credit": available.to_string(),
    });
    Some((c, t, available, details))
}

fn credit_exceeded(s: &Subject) -> Option<Hit> {
    let (_, t, available, details) = credit_use(s).filter(|(_, t, a, _)| t > a)?;
    let message = format!("Order total {t} exceeds the client's available credit {available}");
    Some((message, details))
}

fn credit_high_use(s: &Subject) -> Option<Hit> {
    let (c, t, _, details) = credit_use(s).filter(|(c, t, a, _)| {
        // Within the limit, and (balance + total) / limit > 0.8, without dividing.
        t <= a
            && c.credit_limit > Decimal::ZERO
            && (c.balance + *t) * Decimal::from(5) > c.credit_limit * Decimal::from(4)
    })?;
    let message = format!(
        "Order brings the client's credit use above 80 % ({} of {})",
        c.balance + t,
        c.credit_limit
    );
    Some((message, details))
}

fn address_missing(s: &Subject) -> Option<Hit> {
    blank(&s.order.property_address)
        .then(|| ("Order has no property address".to_string(), json!({})))
}

fn borrower_contact_missing(s: &Subject) -> Option<Hit> {
    (blank(&s.order.borrower_email) && blank(&s.order.borrower_phone)).then(|| {
        let message = "Order has neither a borrower e-mail nor a borrower phone".to_string();
        (
            message,
            json!({ "fields": ["borrower_email", "borrower_phone"] }),
        )
    })
}

/// The warning for an optional field left blank.
fn missing(v: &Option<String>, what: &str) -> Option<Hit> {
    blank(v).then(|| (format!("Order has no {what}"), json!({})))
}

const fn rule(
    code: &'static str,
    exception_type: &'static str,
    severity: Severity,
    field: &'static str,
    check: fn(&Subject) -> Option<Hit>,
) -> Rule {
    Rule {
        code,
        exception_type,
        severity,
        field,
        check,
    }
}

use Severity::{Critical, Error, Warning};

/// The rules of SPEC §6, in the order their findings are listed.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    rule(CODE_FEE_NOT_POSITIVE, "pricing", Error, "fee_amount", fee_not_positive),
    rule(CODE_FEE_OUTSIDE_RANGE, "pricing", Warning, "fee_amount", fee_outside_range),
    rule(CODE_CLIENT_MISSING, "credit", Error, "client_id", client_missing),
    rule(CODE_CLIENT_INACTIVE, "credit", Critical, "client_id", client_inactive),
    rule(CODE_CREDIT_EXCEEDED, "credit", Error, "total_amount", credit_exceeded),
    rule(CODE_CREDIT_HIGH_USE, "credit", Warning, "total_amount", credit_high_use),
    rule(CODE_ADDRESS_MISSING, "requirements", Error, "property_address", address_missing),
    rule(CODE_BORROWER_CONTACT_MISSING, "requirements", Error, "borrower_email", borrower_contact_missing),
    rule(CODE_CITY_MISSING, "requirements", Warning, "property_city",
         |s| missing(&s.order.property_city, "property city")),
    rule(CODE_STATE_MISSING, "requirements", Warning, "property_state",
         |s| missing(&s.order.property_state, "property state")),
    rule(CODE_ZIP_MISSING, "requirements", Warning, "property_zip",
         |s| missing(&s.order.property_zip, "property ZIP code")),
    rule(CODE_BORROWER_NAME_MISSING, "requirements", Warning, "borrower_name",
         |s| missing(&s.order.borrower_name, "borrower name")),
    rule(CODE_CONTACT_PHONE_MISSING, "requirements", Warning, "property_contact_phone",
         |s| missing(&s.order.property_contact_phone, "property contact phone")),
];

/// Whether no blocking finding of this exception type was raised.
fn valid(findings: &[Finding], exception_type: &str) -> bool {
    !findings
        .iter()
        .any(|f| f.exception_type == exception_type && f.severity.blocks())
}

/// The safe auto-fixes (total below a positive fee → the fee; negative tech fee → 0).
pub fn auto_fixes(order: &OrderRow) -> Vec<AutoFix> {
    let mut fixes = Vec::new();
    let fee = order.fee_amount.filter(|f| *f > Decimal::ZERO);
    if let Some(f) = fee {
        if order.total_amount.map(|t| t < f).unwrap_or(true) {
            fixes.push(AutoFix {
                field: "total_amount",
                from: order.total_amount,
                to: f,
                rule: "total_below_fee",
            });
        }
    }
    if let Some(tech) = order.tech_fee.filter(|t| *t < Decimal::ZERO) {
        fixes.push(AutoFix {
            field: "tech_fee",
            from: Some(tech),
            to: Decimal::new(0, 2),
            rule: "negative_tech_fee",
        });
    }
    fixes
}

/// Apply the safe auto-fixes, then every rule of [`RULES`] to the corrected order.
/// The caller handles cancelled orders (skipped, never validated).
pub fn validate(
    order: &OrderRow,
    product: Option<&Product>,
    client: Option<&Client>,
) -> Validation {
    let fixes = auto_fixes(order);
    let total = fixes
        .iter()
        .find(|f| f.field == "total_amount")
        .map(|f| f.to)
        .or(order.total_amount);
    let subject = Subject {
        order,
        total,
        product,
        client,
    };
    let findings: Vec<Finding> = RULES.iter().filter_map(|r| r.apply(&subject)).collect();
    Validation {
        pricing_valid: valid(&findings, "pricing"),
        credit_valid: valid(&findings, "credit"),
        requirements_valid: valid(&findings, "requirements"),
        auto_fixes: fixes,
        findings,
    }
}
