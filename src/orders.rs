//! Order queue processing (SPEC §6) and `autopilot process-orders`.
//!
//! Owns: queueing orders the `queue_new_orders` trigger missed, claiming queue entries
//! (`FOR UPDATE SKIP LOCKED`, stale claims reclaimed), the validation rules (a pure
//! function, [`validate`]), the set-based write-back (auto-fixes on `orders`, findings in
//! `order_processing_exceptions`, outcome on the queue entry), and the list of findings that
//! deserve a human review card ([`review_targets`]; the cycle creates the cards through the
//! policy engine).
//!
//! Decisions the SPEC leaves open:
//! - credit: a `bill` order whose total equals exactly the available credit
//!   (credit_limit − balance) is allowed; use of exactly 80 % of the limit is not a warning
//!   (the warning needs strictly more); no utilisation warning when the limit is 0 or the
//!   order is already over the limit (that is the error). Each order is checked against
//!   the client's recorded balance, which does not include the order itself.
//! - a missing total counts as "below the fee" and is set to the fee (when the fee is
//!   positive; a non-positive fee is an error and nothing is auto-fixed from it).
//! - re-validation: findings that still apply are refreshed (and reopened if someone had
//!   resolved them); the agent's findings that no longer apply are marked resolved.
//!   A cancelled order is `skipped` and its open findings are resolved.
//! - auto-fixes of a re-validation are appended to the entry's `auto_fixes` history.

#[allow(unused_imports)]
use crate::db::{Begin, Commit, Sql};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::ProcessOrdersArgs;
use crate::db::Fence;
use crate::Context;

/// A `processing` entry claimed longer ago than this is assumed abandoned (its runner
/// crashed or hung) and is claimed again.
pub const STALE_CLAIM_SECS: i64 = 600;

/// Default number of entries claimed per batch.
pub const DEFAULT_BATCH: u32 = 500;

const QUEUE_MISSING_SQL: &str = include_str!("sql/orders_queue_missing.sql");
const CLAIM_SQL: &str = include_str!("sql/orders_claim.sql");
const LOAD_BATCH_SQL: &str = include_str!("sql/orders_load_batch.sql");
const UPSERT_EXCEPTIONS_SQL: &str = include_str!("sql/orders_upsert_exceptions.sql");
const RESOLVE_STALE_FINDINGS_SQL: &str = include_str!("sql/orders_resolve_stale_findings.sql");
const REVIEW_TARGETS_SQL: &str = include_str!("sql/orders_review_targets.sql");

const APPLY_FIXES_SQL: &str = "\
UPDATE public.orders o
SET total_amount = f.total_amount, tech_fee = f.tech_fee
FROM unnest($1::uuid[], $2::numeric[], $3::numeric[]) AS f (id, total_amount, tech_fee)
WHERE o.id = f.id";

const FINISH_ENTRIES_SQL: &str = "\
UPDATE public.order_processing_queue q
SET status = f.status,
    processed_at = $7::timestamptz,
    pricing_valid = f.pricing_valid,
    credit_valid = f.credit_valid,
    requirements_valid = f.requirements_valid,
    auto_fixes = q.auto_fixes || f.auto_fixes,
    last_error = NULL
FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::jsonb[])
     AS f (id, status, pricing_valid, credit_valid, requirements_valid, auto_fixes)
WHERE q.id = f.id";

/// Best effort after a failed write-back: say why on the entries (they stay `processing`
/// and are retried once the claim is stale).
const RECORD_ERROR_SQL: &str = "\
UPDATE public.order_processing_queue q
SET last_error = $3
FROM unnest($1::uuid[], $2::int[]) AS mine (id, attempts)
WHERE q.id = mine.id AND q.attempts = mine.attempts AND q.status = 'processing'";

const TENANTS_WITH_WORK_SQL: &str = "\
SELECT DISTINCT tenant_id FROM public.order_processing_queue
WHERE (cardinality($1::uuid[]) = 0 OR tenant_id = ANY ($1::uuid[]))
  AND (status = 'pending'
       OR (status = 'processing' AND (claimed_at IS NULL OR claimed_at < $2::timestamptz)))
ORDER BY tenant_id";

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

/// Every code [`validate`] can raise: the findings the agent owns (and may resolve).
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

// ---------------------------------------------------------------------------------------
// Validation (pure)

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

    /// The order's total and tech fee after the auto-fixes (None when unchanged).
    fn fixed(&self, field: &str) -> Option<Decimal> {
        self.auto_fixes
            .iter()
            .rev()
            .find(|f| f.field == field)
            .map(|f| f.to)
    }
}

fn blank(v: &Option<String>) -> bool {
    v.as_deref().map(|s| s.trim().is_empty()).unwrap_or(true)
}

fn dec(d: Option<Decimal>) -> Value {
    d.map(|d| Value::String(d.to_string()))
        .unwrap_or(Value::Null)
}

/// Apply the safe auto-fixes, then the pricing, credit and requirements rules of SPEC §6.
/// The caller handles cancelled orders (skipped, never validated).
pub fn validate(
    order: &OrderRow,
    product: Option<&Product>,
    client: Option<&Client>,
) -> Validation {
    let mut auto_fixes = Vec::new();
    let mut findings = Vec::new();
    let fee = order.fee_amount;
    let fee_positive = fee.map(|f| f > Decimal::ZERO).unwrap_or(false);

    // Auto-fixes first: the rules judge the corrected order.
    let mut total = order.total_amount;
    if let Some(f) = fee.filter(|_| fee_positive) {
        if total.map(|t| t < f).unwrap_or(true) {
            auto_fixes.push(AutoFix {
                field: "total_amount",
                from: total,
                to: f,
                rule: "total_below_fee",
            });
            total = Some(f);
        }
    }
    if let Some(tech) = order.tech_fee.filter(|t| *t < Decimal::ZERO) {
        auto_fixes.push(AutoFix {
            field: "tech_fee",
            from: Some(tech),
            to: Decimal::new(0, 2),
            rule: "negative_tech_fee",
        });
    }

    // Pricing.
    let mut pricing_valid = true;
    if !fee_positive {
        pricing_valid = false;
        findings.push(Finding {
            exception_type: "pricing",
            severity: Severity::Error,
            code: CODE_FEE_NOT_POSITIVE,
            field: Some("fee_amount"),
            message: match fee {
                None => "Order has no fee".to_string(),
                Some(f) => format!("Order fee {f} is not positive"),
            },
            details: json!({ "fee_amount": dec(fee) }),
        });
    } else if let (Some(f), Some(p)) = (fee, product) {
        let below = p.min_price.map(|min| f < min).unwrap_or(false);
        let above = p.max_price.map(|max| f > max).unwrap_or(false);
        if below || above {
            findings.push(Finding {
                exception_type: "pricing",
                severity: Severity::Warning,
                code: CODE_FEE_OUTSIDE_RANGE,
                field: Some("fee_amount"),
                message: format!(
                    "Order fee {f} is {} the product's price range ({} – {})",
                    if below { "below" } else { "above" },
                    p.min_price
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "no minimum".into()),
                    p.max_price
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "no maximum".into()),
                ),
                details: json!({
                    "fee_amount": dec(fee), "min_price": dec(p.min_price),
                    "max_price": dec(p.max_price), "product_id": p.id,
                }),
            });
        }
    }

    // Credit: only orders billed to the client use its credit.
    let mut credit_valid = true;
    let billed = order
        .payment_method
        .as_deref()
        .map(|m| m.trim().eq_ignore_ascii_case("bill"))
        .unwrap_or(false);
    if billed {
        match client {
            None => {
                credit_valid = false;
                findings.push(Finding {
                    exception_type: "credit",
                    severity: Severity::Error,
                    code: CODE_CLIENT_MISSING,
                    field: Some("client_id"),
                    message: "Billed order has no client to bill".to_string(),
                    details: json!({ "client_id": order.client_id }),
                });
            }
            Some(c) => {
                if !c.is_active {
                    credit_valid = false;
                    findings.push(Finding {
                        exception_type: "credit",
                        severity: Severity::Critical,
                        code: CODE_CLIENT_INACTIVE,
                        field: Some("client_id"),
                        message: "Billed order's client is inactive".to_string(),
                        details: json!({ "client_id": c.id }),
                    });
                }
                let t = total.unwrap_or(Decimal::ZERO);
                let available = c.credit_limit - c.balance;
                let details = json!({
                    "client_id": c.id, "total_amount": t.to_string(),
                    "credit_limit": c.credit_limit.to_string(), "balance": c.balance.to_string(),
                    "available_credit": available.to_string(),
                });
                if t > available {
                    credit_valid = false;
                    findings.push(Finding {
                        exception_type: "credit",
                        severity: Severity::Error,
                        code: CODE_CREDIT_EXCEEDED,
                        field: Some("total_amount"),
                        message: format!(
                            "Order total {t} exceeds the client's available credit {available}"
                        ),
                        details,
                    });
                } else if c.credit_limit > Decimal::ZERO
                    // (balance + total) / limit > 0.8, without dividing.
                    && (c.balance + t) * Decimal::from(5) > c.credit_limit * Decimal::from(4)
                {
                    findings.push(Finding {
                        exception_type: "credit",
                        severity: Severity::Warning,
                        code: CODE_CREDIT_HIGH_USE,
                        field: Some("total_amount"),
                        message: format!(
                            "Order brings the client's credit use above 80 % ({} of {})",
                            c.balance + t,
                            c.credit_limit
                        ),
                        details,
                    });
                }
            }
        }
    }

    // Requirements.
    let mut requirements_valid = true;
    if blank(&order.property_address) {
        requirements_valid = false;
        findings.push(Finding {
            exception_type: "requirements",
            severity: Severity::Error,
            code: CODE_ADDRESS_MISSING,
            field: Some("property_address"),
            message: "Order has no property address".to_string(),
            details: json!({}),
        });
    }
    if blank(&order.borrower_email) && blank(&order.borrower_phone) {
        requirements_valid = false;
        findings.push(Finding {
            exception_type: "requirements",
            severity: Severity::Error,
            code: CODE_BORROWER_CONTACT_MISSING,
            field: Some("borrower_email"),
            message: "Order has neither a borrower e-mail nor a borrower phone".to_string(),
            details: json!({ "fields": ["borrower_email", "borrower_phone"] }),
        });
    }
    let warnings: [(&Option<String>, &'static str, &'static str, &str); 5] = [
        (
            &order.property_city,
            "property_city",
            CODE_CITY_MISSING,
            "property city",
        ),
        (
            &order.property_state,
            "property_state",
            CODE_STATE_MISSING,
            "property state",
        ),
        (
            &order.property_zip,
            "property_zip",
            CODE_ZIP_MISSING,
            "property ZIP code",
        ),
        (
            &order.borrower_name,
            "borrower_name",
            CODE_BORROWER_NAME_MISSING,
            "borrower name",
        ),
        (
            &order.property_contact_phone,
            "property_contact_phone",
            CODE_CONTACT_PHONE_MISSING,
            "property contact phone",
        ),
    ];
    for (value, field, code, what) in warnings {
        if blank(value) {
            findings.push(Finding {
                exception_type: "requirements",
                severity: Severity::Warning,
                code,
                field: Some(field),
                message: format!("Order has no {what}"),
                details: json!({}),
            });
        }
    }

    Validation {
        auto_fixes,
        findings,
        pricing_valid,
        credit_valid,
        requirements_valid,
    }
}

// ---------------------------------------------------------------------------------------
// Processing

/// Counts of one run (per tenant or in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrdersReport {
    pub processed: u64,
    pub validated: u64,
    pub exception: u64,
    pub skipped: u64,
    pub auto_fixes: u64,
}

impl OrdersReport {
    pub fn add(&mut self, other: &OrdersReport) {
        self.processed += other.processed;
        self.validated += other.validated;
        self.exception += other.exception;
        self.skipped += other.skipped;
        self.auto_fixes += other.auto_fixes;
    }
}

fn stale_before(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::seconds(STALE_CLAIM_SECS)
}

/// Queue the selected tenants' (all when empty) non-cancelled orders that have no entry.
pub async fn queue_missing(client: &impl Sql, tenants: &[Uuid], now: DateTime<Utc>) -> Result<u64> {
    client
        .execute(QUEUE_MISSING_SQL, &[&tenants, &now])
        .await
        .context("queueing orders without a queue entry")
}

/// Validate every claimable entry of `tenant`, batch by batch, after queueing the orders
/// the trigger missed. With a fence, every write transaction first checks the lease.
pub async fn process_tenant(
    client: &mut impl crate::db::Begin,
    tenant: Uuid,
    batch: u32,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
) -> Result<OrdersReport> {
    let tx = client
        .begin()
        .await
        .context("starting the queueing transaction")?;
    crate::db::check_fence(fence, &tx).await?;
    queue_missing(&tx, &[tenant], now).await?;
    tx.commit()
        .await
        .context("committing the queueing transaction")?;
    drain_tenant(client, tenant, batch, fence, now).await
}

/// Claim and validate batches of `tenant` until none is left.
async fn drain_tenant(
    client: &mut impl crate::db::Begin,
    tenant: Uuid,
    batch: u32,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
) -> Result<OrdersReport> {
    let mut report = OrdersReport::default();
    let limit = i64::from(batch.max(1));
    loop {
        // The claim commits on its own so concurrent runners see the entries as taken.
        let tx = client
            .begin()
            .await
            .context("starting the claim transaction")?;
        crate::db::check_fence(fence, &tx).await?;
        let rows = tx
            .query(CLAIM_SQL, &[&tenant, &now, &stale_before(now), &limit])
            .await
            .context("claiming queued orders")?;
        tx.commit().await.context("committing the claim")?;
        if rows.is_empty() {
            return Ok(report);
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.get(1)).collect();
        match write_back(client, &ids, &attempts, fence, now).await {
            Ok(r) => report.add(&r),
            Err(e) => {
                if !crate::db::is_lease_lost_err(&e) {
                    let msg = format!("{e:#}");
                    if let Err(e2) = client
                        .execute(RECORD_ERROR_SQL, &[&ids, &attempts, &msg])
                        .await
                    {
                        tracing::warn!(error = %crate::db::error_text(&e2), "could not record the batch failure on its entries");
                    }
                }
                return Err(e);
            }
        }
    }
}

/// Everything one batch writes, gathered before writing it in a few set-based statements.
#[derive(Default)]
struct BatchWrites {
    fix_ids: Vec<Uuid>,
    fix_totals: Vec<Option<Decimal>>,
    fix_techs: Vec<Option<Decimal>>,
    ex_tenants: Vec<Uuid>,
    ex_orders: Vec<Uuid>,
    ex_queue: Vec<Uuid>,
    ex_types: Vec<String>,
    ex_severities: Vec<String>,
    ex_codes: Vec<String>,
    ex_fields: Vec<Option<String>>,
    ex_messages: Vec<String>,
    ex_details: Vec<Value>,
    order_ids: Vec<Uuid>,
    q_ids: Vec<Uuid>,
    q_status: Vec<String>,
    q_pricing: Vec<Option<bool>>,
    q_credit: Vec<Option<bool>>,
    q_requirements: Vec<Option<bool>>,
    q_fixes: Vec<Value>,
}

fn row_to_parts(r: &tokio_postgres::Row) -> (Uuid, OrderRow, Option<Product>, Option<Client>) {
    let order = OrderRow {
        id: r.get("id"),
        tenant_id: r.get("tenant_id"),
        client_id: r.get("client_id"),
        product_id: r.get("product_id"),
        status: r.get("status"),
        fee_amount: r.get("fee_amount"),
        total_amount: r.get("total_amount"),
        tech_fee: r.get("tech_fee"),
        payment_method: r.get("payment_method"),
        property_address: r.get("property_address"),
        property_city: r.get("property_city"),
        property_state: r.get("property_state"),
        property_zip: r.get("property_zip"),
        borrower_name: r.get("borrower_name"),
        borrower_email: r.get("borrower_email"),
        borrower_phone: r.get("borrower_phone"),
        property_contact_name: r.get("property_contact_name"),
        property_contact_phone: r.get("property_contact_phone"),
    };
    let product = r.get::<_, Option<Uuid>>("p_id").map(|id| Product {
        id,
        min_price: r.get("min_price"),
        max_price: r.get("max_price"),
    });
    let client = r.get::<_, Option<Uuid>>("c_id").map(|id| Client {
        id,
        is_active: r.get::<_, Option<bool>>("c_active").unwrap_or(true),
        credit_limit: r
            .get::<_, Option<Decimal>>("credit_limit")
            .unwrap_or(Decimal::ZERO),
        balance: r
            .get::<_, Option<Decimal>>("balance")
            .unwrap_or(Decimal::ZERO),
    });
    (r.get("queue_id"), order, product, client)
}

/// Validate one claimed batch and write the outcome, in one transaction. Entries another
/// runner reclaimed meanwhile (attempts changed) are left to it.
async fn write_back(
    client: &mut impl crate::db::Begin,
    ids: &[Uuid],
    attempts: &[i32],
    fence: Option<&Fence>,
    now: DateTime<Utc>,
) -> Result<OrdersReport> {
    let tx = client
        .begin()
        .await
        .context("starting the write-back transaction")?;
    crate::db::check_fence(fence, &tx).await?;
    let rows = tx
        .query(LOAD_BATCH_SQL, &[&ids, &attempts])
        .await
        .context("loading the claimed orders")?;
    let mut w = BatchWrites::default();
    let mut report = OrdersReport::default();
    for r in &rows {
        let (queue_id, order, product, client) = row_to_parts(r);
        w.order_ids.push(order.id);
        w.q_ids.push(queue_id);
        report.processed += 1;
        if order.is_cancelled() {
            report.skipped += 1;
            w.q_status.push("skipped".into());
            w.q_pricing.push(None);
            w.q_credit.push(None);
            w.q_requirements.push(None);
            w.q_fixes.push(json!([]));
            continue;
        }
        let v = validate(&order, product.as_ref(), client.as_ref());
        match v.status() {
            "validated" => report.validated += 1,
            _ => report.exception += 1,
        }
        report.auto_fixes += v.auto_fixes.len() as u64;
        if !v.auto_fixes.is_empty() {
            w.fix_ids.push(order.id);
            w.fix_totals
                .push(v.fixed("total_amount").or(order.total_amount));
            w.fix_techs.push(v.fixed("tech_fee").or(order.tech_fee));
        }
        for f in &v.findings {
            w.ex_tenants.push(order.tenant_id);
            w.ex_orders.push(order.id);
            w.ex_queue.push(queue_id);
            w.ex_types.push(f.exception_type.into());
            w.ex_severities.push(f.severity.as_str().into());
            w.ex_codes.push(f.code.into());
            w.ex_fields.push(f.field.map(String::from));
            w.ex_messages.push(f.message.clone());
            w.ex_details.push(f.details.clone());
        }
        w.q_status.push(v.status().into());
        w.q_pricing.push(Some(v.pricing_valid));
        w.q_credit.push(Some(v.credit_valid));
        w.q_requirements.push(Some(v.requirements_valid));
        w.q_fixes.push(Value::Array(
            v.auto_fixes.iter().map(AutoFix::to_json).collect(),
        ));
    }
    if rows.len() < ids.len() {
        tracing::info!(
            lost = ids.len() - rows.len(),
            "queue entries were reclaimed by another runner or deleted; left to it"
        );
    }
    if !w.q_ids.is_empty() {
        if !w.fix_ids.is_empty() {
            tx.execute(APPLY_FIXES_SQL, &[&w.fix_ids, &w.fix_totals, &w.fix_techs])
                .await
                .context("applying auto-fixes to orders")?;
        }
        let codes: Vec<&str> = ALL_CODES.to_vec();
        tx.execute(
            RESOLVE_STALE_FINDINGS_SQL,
            &[&w.order_ids, &w.ex_orders, &w.ex_codes, &codes, &now],
        )
        .await
        .context("resolving findings that no longer apply")?;
        if !w.ex_orders.is_empty() {
            tx.execute(
                UPSERT_EXCEPTIONS_SQL,
                &[
                    &w.ex_tenants,
                    &w.ex_orders,
                    &w.ex_queue,
                    &w.ex_types,
                    &w.ex_severities,
                    &w.ex_codes,
                    &w.ex_fields,
                    &w.ex_messages,
                    &w.ex_details,
                    &now,
                ],
            )
            .await
            .context("recording order exceptions")?;
        }
        tx.execute(
            FINISH_ENTRIES_SQL,
            &[
                &w.q_ids,
                &w.q_status,
                &w.q_pricing,
                &w.q_credit,
                &w.q_requirements,
                &w.q_fixes,
                &now,
            ],
        )
        .await
        .context("recording queue outcomes")?;
    }
    tx.commit().await.context("committing the write-back")?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Review cards (created by the cycle through the policy engine)

/// An unresolved error/critical finding whose order has no open review card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewTarget {
    pub order_id: Uuid,
    pub exception_id: Uuid,
    pub severity: String,
    pub exception_type: String,
    pub code: String,
    pub message: String,
    pub client_id: Option<Uuid>,
}

/// At most `limit` orders needing a human review card, most severe first, then oldest;
/// one per order (its most severe finding), none for an order that already has an open
/// agent `create_task` card (`kanban_cards.agent_target` = order id).
pub async fn review_targets(
    client: &impl Sql,
    tenant: Uuid,
    limit: i64,
) -> Result<Vec<ReviewTarget>> {
    let rows = client
        .query(REVIEW_TARGETS_SQL, &[&tenant, &limit.max(0)])
        .await
        .context("listing order exceptions to review")?;
    Ok(rows
        .iter()
        .map(|r| ReviewTarget {
            order_id: r.get(0),
            exception_id: r.get(1),
            severity: r.get(2),
            exception_type: r.get(3),
            code: r.get(4),
            message: r.get(5),
            client_id: r.get(6),
        })
        .collect())
}

/// The `create_task` card's payload: names the order and the exception.
pub fn review_card_payload(t: &ReviewTarget) -> Value {
    json!({
        "order_id": t.order_id,
        "exception_id": t.exception_id,
        "exception_type": t.exception_type,
        "severity": t.severity,
        "message": t.message,
    })
}

pub fn review_card_title(t: &ReviewTarget) -> String {
    let short = t.order_id.simple().to_string();
    format!(
        "Review order {} ({} {}): {}",
        &short[..8],
        t.severity,
        t.exception_type,
        t.message
    )
}

// ---------------------------------------------------------------------------------------
// Command

#[derive(Debug, Serialize)]
struct TenantSummary {
    tenant_id: Uuid,
    #[serde(flatten)]
    report: OrdersReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    #[serde(flatten)]
    total: OrdersReport,
    tenants: Vec<TenantSummary>,
}

/// `autopilot process-orders`. Reports every tenant named with `--tenant` (zeros included);
/// without `--tenant`, every tenant that had queued work. A tenant whose processing fails
/// (other than the database becoming unreachable) is reported with its error, the others
/// go on, and the exit code is 1.
/// Connections (and tenants drained at once) of the `process-orders` command.
const COMMAND_WORKERS: usize = 4;

pub async fn run(ctx: &Context, args: &ProcessOrdersArgs) -> Result<u8> {
    let now = ctx.now();
    let pool = ctx.db.pool(COMMAND_WORKERS)?;
    let conn = crate::db::get_checked(&pool, &ctx.db).await?;
    crate::db::require_tenants(&*conn, &args.tenants).await?;

    let queued = queue_missing(&*conn, &args.tenants, now).await?;
    if queued > 0 {
        tracing::info!(queued, "queued orders that had no queue entry");
    }
    let mut tenants: Vec<Uuid> = conn
        .query(TENANTS_WITH_WORK_SQL, &[&args.tenants, &stale_before(now)])
        .await
        .context("listing tenants with queued orders")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !args.tenants.is_empty() {
        let mut listed = args.tenants.clone();
        listed.sort();
        listed.dedup();
        tenants = listed;
    }

    let mut summary = Summary {
        total: OrdersReport::default(),
        tenants: Vec::new(),
    };
    drop(conn);
    // Tenants are drained in parallel on their own connections: the work is bound by the
    // server, and a few backends keep every core of it busy while each waits on I/O.
    let mut outcomes: Vec<(Uuid, Result<OrdersReport>)> = futures::stream::iter(tenants)
        .map(|tenant| {
            let pool = &pool;
            async move {
                let result = async {
                    let mut conn = crate::db::get(pool, &ctx.db).await?;
                    drain_tenant(&mut *conn, tenant, args.batch, None, now).await
                }
                .await;
                (tenant, result)
            }
        })
        .buffer_unordered(COMMAND_WORKERS)
        .collect()
        .await;
    outcomes.sort_by_key(|(tenant, _)| *tenant);
    let mut failed = false;
    for (tenant, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                summary.total.add(&r);
                summary.tenants.push(TenantSummary {
                    tenant_id: tenant,
                    report: r,
                    error: None,
                });
            }
            Err(e) => {
                let connection_lost = e.chain().any(|c| {
                    c.downcast_ref::<tokio_postgres::Error>()
                        .map(crate::error::is_connection_error)
                        .unwrap_or(false)
                });
                if connection_lost {
                    return Err(e);
                }
                tracing::error!(tenant = %tenant, error = %crate::error::redact(&format!("{e:#}")), "processing orders failed");
                failed = true;
                summary.tenants.push(TenantSummary {
                    tenant_id: tenant,
                    report: OrdersReport::default(),
                    error: Some(crate::error::redact(&format!("{e:#}"))),
                });
            }
        }
    }

    tracing::info!(
        tenants = summary.tenants.len(),
        processed = summary.total.processed,
        validated = summary.total.validated,
        exception = summary.total.exception,
        skipped = summary.total.skipped,
        auto_fixes = summary.total.auto_fixes,
        "orders processed"
    );
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        for t in &summary.tenants {
            let r = &t.report;
            match &t.error {
                Some(err) => println!("tenant {}: failed: {err}", t.tenant_id),
                None => println!(
                    "tenant {}: processed {} (validated {}, exception {}, skipped {}), auto-fixes {}",
                    t.tenant_id, r.processed, r.validated, r.exception, r.skipped, r.auto_fixes
                ),
            }
        }
        let r = &summary.total;
        println!(
            "total: processed {} (validated {}, exception {}, skipped {}), auto-fixes {}",
            r.processed, r.validated, r.exception, r.skipped, r.auto_fixes
        );
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn good_order() -> OrderRow {
        OrderRow {
            id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            client_id: Some(Uuid::new_v4()),
            status: "new".into(),
            fee_amount: Some(d("450.00")),
            total_amount: Some(d("475.00")),
            tech_fee: Some(d("25.00")),
            payment_method: Some("bill".into()),
            property_address: Some("1 Main St".into()),
            property_city: Some("Springfield".into()),
            property_state: Some("IL".into()),
            property_zip: Some("62701".into()),
            borrower_name: Some("Bo".into()),
            borrower_email: Some("bo@example.com".into()),
            borrower_phone: None,
            property_contact_name: Some("Pat".into()),
            property_contact_phone: Some("555".into()),
            ..Default::default()
        }
    }

    fn client(limit: &str, balance: &str) -> Client {
        Client {
            id: Uuid::new_v4(),
            is_active: true,
            credit_limit: d(limit),
            balance: d(balance),
        }
    }

    fn codes(v: &Validation) -> Vec<&'static str> {
        v.findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn complete_billed_order_within_credit_has_no_findings() {
        let v = validate(&good_order(), None, Some(&client("10000", "0")));
        assert!(v.findings.is_empty(), "{:?}", v.findings);
        assert!(v.auto_fixes.is_empty());
        assert_eq!(v.status(), "validated");
    }

    #[test]
    fn total_equal_to_available_credit_is_allowed_and_one_cent_more_is_not() {
        let mut o = good_order();
        o.total_amount = Some(d("500.00"));
        // available = 1000 - 500 = 500; use = 100 % → warning only.
        let v = validate(&o, None, Some(&client("1000.00", "500.00")));
        assert!(v.credit_valid);
        assert_eq!(codes(&v), vec![CODE_CREDIT_HIGH_USE]);
        o.total_amount = Some(d("500.01"));
        let v = validate(&o, None, Some(&client("1000.00", "500.00")));
        assert!(!v.credit_valid);
        assert_eq!(codes(&v), vec![CODE_CREDIT_EXCEEDED]);
    }

    #[test]
    fn exactly_eighty_percent_use_is_not_a_warning_but_one_cent_more_is() {
        let mut o = good_order();
        o.total_amount = Some(d("500.00"));
        let v = validate(&o, None, Some(&client("1000.00", "300.00")));
        assert!(v.findings.is_empty(), "{:?}", v.findings);
        o.total_amount = Some(d("500.01"));
        let v = validate(&o, None, Some(&client("1000.00", "300.00")));
        assert_eq!(codes(&v), vec![CODE_CREDIT_HIGH_USE]);
        assert_eq!(v.findings[0].severity, Severity::Warning);
        assert!(v.credit_valid);
    }

    #[test]
    fn missing_total_is_set_to_the_fee_and_credit_judges_the_fixed_total() {
        let mut o = good_order();
        o.total_amount = None;
        let v = validate(&o, None, Some(&client("400", "0")));
        assert_eq!(v.auto_fixes.len(), 1);
        assert_eq!(v.auto_fixes[0].to, d("450.00"));
        assert_eq!(codes(&v), vec![CODE_CREDIT_EXCEEDED]);
    }

    #[test]
    fn non_positive_fee_is_an_error_and_is_not_used_to_fix_the_total() {
        let mut o = good_order();
        o.fee_amount = Some(d("0"));
        o.total_amount = Some(d("-5"));
        let v = validate(&o, None, Some(&client("1000", "0")));
        assert!(v.auto_fixes.is_empty());
        assert!(!v.pricing_valid);
        assert_eq!(codes(&v), vec![CODE_FEE_NOT_POSITIVE]);
    }

    #[test]
    fn fee_on_the_product_range_bounds_is_not_a_warning() {
        let p = Product {
            id: Uuid::new_v4(),
            min_price: Some(d("450.00")),
            max_price: Some(d("450.00")),
        };
        let v = validate(&good_order(), Some(&p), Some(&client("10000", "0")));
        assert!(v.findings.is_empty());
    }

    #[test]
    fn inactive_client_is_critical_and_the_order_an_exception() {
        let mut c = client("10000", "0");
        c.is_active = false;
        let v = validate(&good_order(), None, Some(&c));
        assert_eq!(codes(&v), vec![CODE_CLIENT_INACTIVE]);
        assert_eq!(v.findings[0].severity, Severity::Critical);
        assert_eq!(v.status(), "exception");
    }

    #[test]
    fn auto_fix_is_recorded_with_decimal_strings() {
        let fix = AutoFix {
            field: "total_amount",
            from: Some(d("400.00")),
            to: d("450.00"),
            rule: "total_below_fee",
        };
        assert_eq!(
            fix.to_json(),
            json!({"field": "total_amount", "from": "400.00", "to": "450.00", "rule": "total_below_fee"})
        );
    }

    #[test]
    fn review_card_payload_names_the_order_and_the_exception() {
        let t = ReviewTarget {
            order_id: Uuid::new_v4(),
            exception_id: Uuid::new_v4(),
            severity: "error".into(),
            exception_type: "credit".into(),
            code: CODE_CREDIT_EXCEEDED.into(),
            message: "too much".into(),
            client_id: None,
        };
        let p = review_card_payload(&t);
        assert_eq!(p["order_id"], json!(t.order_id));
        assert_eq!(p["exception_id"], json!(t.exception_id));
        assert!(review_card_title(&t).contains("too much"));
    }
}
