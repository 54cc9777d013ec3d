//! One batch's data: the claimed rows as read ([`Claimed`]), their validation into
//! column arrays ([`Writes`]), and the set-based write-back of everything a batch writes in
//! one statement (auto-fixes on `orders`, findings in `order_processing_exceptions`,
//! outcome on the queue entry).
//!
//! Re-validation: findings that still apply are refreshed (and reopened if someone had
//! resolved them); the agent's findings that no longer apply are marked resolved. A
//! cancelled order is `skipped` and its open findings are resolved. Auto-fixes of a
//! re-validation are appended to the entry's `auto_fixes` history.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

use super::rules::{validate, AutoFix, Client, OrderRow, Product, ALL_CODES};
use super::OrdersReport;
use crate::db::Sql;

const WRITE_BATCH_SQL: &str = crate::sql!("orders/write_batch");

/// One claimed row: the entry, its order, product and client, and whether the order has
/// open findings.
pub(super) struct Claimed {
    pub queue_id: Uuid,
    pub order: OrderRow,
    pub product: Option<Product>,
    pub client: Option<Client>,
    pub has_open: bool,
}

impl Claimed {
    /// A row of the claim statement (`claim_batch.sql`), read by column position (the
    /// statement's order): a lookup by name scans the row's 27 column names.
    pub fn from_row(r: &tokio_postgres::Row) -> Result<Claimed, tokio_postgres::Error> {
        Ok(Claimed {
            queue_id: r.try_get(0)?,
            order: order_of(r)?,
            product: match r.try_get::<_, Option<Uuid>>(19)? {
                Some(id) => Some(Product {
                    id,
                    min_price: r.try_get(20)?,
                    max_price: r.try_get(21)?,
                }),
                None => None,
            },
            client: match r.try_get::<_, Option<Uuid>>(22)? {
                Some(id) => Some(Client {
                    id,
                    is_active: r.try_get::<_, Option<bool>>(23)?.unwrap_or(true),
                    credit_limit: r.try_get::<_, Option<Decimal>>(24)?.unwrap_or_default(),
                    balance: r.try_get::<_, Option<Decimal>>(25)?.unwrap_or_default(),
                }),
                None => None,
            },
            has_open: r.try_get(26)?,
        })
    }
}

fn order_of(r: &tokio_postgres::Row) -> Result<OrderRow, tokio_postgres::Error> {
    Ok(OrderRow {
        id: r.try_get(1)?,
        tenant_id: r.try_get(2)?,
        client_id: r.try_get(3)?,
        product_id: r.try_get(4)?,
        status: r.try_get::<_, Option<String>>(5)?.unwrap_or_default(),
        fee_amount: r.try_get(6)?,
        total_amount: r.try_get(7)?,
        tech_fee: r.try_get(8)?,
        payment_method: r.try_get(9)?,
        property_address: r.try_get(10)?,
        property_city: r.try_get(11)?,
        property_state: r.try_get(12)?,
        property_zip: r.try_get(13)?,
        borrower_name: r.try_get(14)?,
        borrower_email: r.try_get(15)?,
        borrower_phone: r.try_get(16)?,
        property_contact_name: r.try_get(17)?,
        property_contact_phone: r.try_get(18)?,
    })
}

/// Everything one batch writes, as the columns of the write statement's arrays.
#[derive(Default)]
pub(super) struct Writes {
    fix_ids: Vec<Uuid>,
    fix_totals: Vec<Option<Decimal>>,
    fix_techs: Vec<Option<Decimal>>,
    fix_old_totals: Vec<Option<Decimal>>,
    fix_old_techs: Vec<Option<Decimal>>,
    reopened_orders: Vec<Uuid>,
    ex_tenants: Vec<Uuid>,
    ex_orders: Vec<Uuid>,
    ex_queue: Vec<Uuid>,
    ex_types: Vec<&'static str>,
    ex_severities: Vec<&'static str>,
    ex_codes: Vec<&'static str>,
    ex_fields: Vec<Option<&'static str>>,
    ex_messages: Vec<String>,
    ex_details: Vec<Value>,
    q_ids: Vec<Uuid>,
    q_status: Vec<&'static str>,
    q_pricing: Vec<Option<bool>>,
    q_credit: Vec<Option<bool>>,
    q_requirements: Vec<Option<bool>>,
    q_fixes: Vec<Value>,
}

/// Validate every claimed entry: what the batch writes, and its counts per tenant.
pub(super) fn validate_all(claimed: &[Claimed]) -> (Writes, BTreeMap<Uuid, OrdersReport>) {
    let mut w = Writes::default();
    let mut reports: BTreeMap<Uuid, OrdersReport> = BTreeMap::new();
    for c in claimed {
        w.add(c, reports.entry(c.order.tenant_id).or_default());
    }
    (w, reports)
}

impl Writes {
    /// Validate one claimed entry and add what it writes; counts go to `report`.
    fn add(&mut self, c: &Claimed, report: &mut OrdersReport) {
        let order = &c.order;
        self.q_ids.push(c.queue_id);
        if c.has_open {
            self.reopened_orders.push(order.id);
        }
        report.processed += 1;
        if order.is_cancelled() {
            report.skipped += 1;
            self.push_outcome("skipped", None, Value::Array(Vec::new()));
            return;
        }
        let v = validate(order, c.product.as_ref(), c.client.as_ref());
        let status = v.status();
        match status {
            "validated" => report.validated += 1,
            _ => report.exception += 1,
        }
        report.auto_fixes += v.auto_fixes.len() as u64;
        if !v.auto_fixes.is_empty() {
            self.fix_ids.push(order.id);
            self.fix_totals
                .push(v.fixed("total_amount").or(order.total_amount));
            self.fix_techs.push(v.fixed("tech_fee").or(order.tech_fee));
            self.fix_old_totals.push(order.total_amount);
            self.fix_old_techs.push(order.tech_fee);
        }
        let flags = (v.pricing_valid, v.credit_valid, v.requirements_valid);
        let fixes = Value::Array(v.auto_fixes.iter().map(AutoFix::to_json).collect());
        for f in v.findings {
            self.ex_tenants.push(order.tenant_id);
            self.ex_orders.push(order.id);
            self.ex_queue.push(c.queue_id);
            self.ex_types.push(f.exception_type);
            self.ex_severities.push(f.severity.as_str());
            self.ex_codes.push(f.code);
            self.ex_fields.push(f.field);
            self.ex_messages.push(f.message);
            self.ex_details.push(f.details);
        }
        self.push_outcome(status, Some(flags), fixes);
    }

    fn push_outcome(
        &mut self,
        status: &'static str,
        flags: Option<(bool, bool, bool)>,
        fixes: Value,
    ) {
        self.q_status.push(status);
        self.q_pricing.push(flags.map(|f| f.0));
        self.q_credit.push(flags.map(|f| f.1));
        self.q_requirements.push(flags.map(|f| f.2));
        self.q_fixes.push(fixes);
    }
}

/// How a batch's write-back went.
pub(super) enum Outcome {
    Written,
    /// An order was edited after it was read: fewer auto-fixes applied than sent.
    OrdersChanged,
}

/// Write everything the batch validated in one statement (in the batch's transaction).
pub(super) async fn write(tx: &impl Sql, w: &Writes, now: DateTime<Utc>) -> Result<Outcome> {
    let codes: &[&str] = ALL_CODES;
    let row = tx
        .query_one(
            WRITE_BATCH_SQL,
            &[
                &w.q_ids,
                &w.q_status,
                &w.q_pricing,
                &w.q_credit,
                &w.q_requirements,
                &w.q_fixes,
                &w.fix_ids,
                &w.fix_totals,
                &w.fix_techs,
                &w.reopened_orders,
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
                &codes,
                &w.fix_old_totals,
                &w.fix_old_techs,
            ],
        )
        .await
        .context("recording the batch's outcomes")?;
    let fixed: i64 = row.try_get(0).context("reading the batch's fix count")?;
    let done: i64 = row.try_get(1).context("reading the batch's entry count")?;
    if fixed != w.fix_ids.len() as i64 {
        return Ok(Outcome::OrdersChanged);
    }
    if done != w.q_ids.len() as i64 {
        anyhow::bail!(
            "{} of {} claimed entries were written back",
            done,
            w.q_ids.len()
        );
    }
    Ok(Outcome::Written)
}
