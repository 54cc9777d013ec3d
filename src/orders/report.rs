//! The report of `process-orders`: totals and one line (or JSON object) per tenant.

use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

use super::OrdersReport;

#[derive(Debug, Serialize)]
struct TenantSummary {
    tenant_id: Uuid,
    #[serde(flatten)]
    report: OrdersReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Summary {
    #[serde(flatten)]
    total: OrdersReport,
    tenants: Vec<TenantSummary>,
}

impl Summary {
    /// The listed tenants (sorted, each once) with their counts and errors; errors are
    /// logged here.
    pub fn of(
        mut listed: Vec<Uuid>,
        reports: &BTreeMap<Uuid, OrdersReport>,
        mut errors: BTreeMap<Uuid, anyhow::Error>,
    ) -> Summary {
        listed.sort();
        listed.dedup();
        let mut summary = Summary {
            total: OrdersReport::default(),
            tenants: Vec::new(),
        };
        for tenant in listed {
            let report = reports.get(&tenant).copied().unwrap_or_default();
            summary.total.add(&report);
            let error = errors.remove(&tenant).map(|e| {
                let msg = crate::error::redact(&format!("{e:#}"));
                tracing::error!(tenant = %tenant, error = %msg, "processing orders failed");
                msg
            });
            summary.tenants.push(TenantSummary {
                tenant_id: tenant,
                report,
                error,
            });
        }
        summary
    }

    pub fn failed(&self) -> bool {
        self.tenants.iter().any(|t| t.error.is_some())
    }

    pub fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        for t in &self.tenants {
            let r = &t.report;
            match &t.error {
                Some(err) => println!("tenant {}: failed: {err}", t.tenant_id),
                None => println!(
                    "tenant {}: processed {} (validated {}, exception {}, skipped {}), auto-fixes {}",
                    t.tenant_id, r.processed, r.validated, r.exception, r.skipped, r.auto_fixes
                ),
            }
        }
        let r = &self.total;
        println!(
            "total: processed {} (validated {}, exception {}, skipped {}), auto-fixes {}",
            r.processed, r.validated, r.exception, r.skipped, r.auto_fixes
        );
        Ok(())
    }
}
