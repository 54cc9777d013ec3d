//! Reply, bounce and complaint rates over a tenant's last 100 sends (computed by the SQL
//! function `mail_feedback_rates`, which also stamps every reflection), the critical alerts
//! when bounces pass 5 % or complaints 0.3 %, the sending pause while such an alert is
//! unacknowledged (checked by the e-mail policy), and their Prometheus lines.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::db::Sql;

const RATES: &str = crate::sql!("inbound/rates");
const ALERT_INPUTS: &str = crate::sql!("inbound/alert_inputs");

pub const BOUNCE_RATE_ALERT: &str = "email_bounce_rate";
pub const COMPLAINT_RATE_ALERT: &str = "email_complaint_rate";
/// Bounced share of the last 100 sends above which sending pauses (5 %).
pub const BOUNCE_THRESHOLD: f64 = 0.05;
/// Complained share of the last 100 sends above which sending pauses (0.3 %, the large
/// mailbox providers' limit for bulk senders).
pub const COMPLAINT_THRESHOLD: f64 = 0.003;
/// The alert rules divide by at least this many sends, so one early bounce among a
/// tenant's first three messages does not read as 33 % (a single complaint still does).
pub const MIN_SAMPLE: i64 = 20;

/// The rates of `mail_feedback_rates` (fractions 0..1 of the last `sends` ≤ 100 sends).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rates {
    pub sends: i64,
    pub replies: i64,
    pub bounces: i64,
    pub complaints: i64,
    pub reply_rate: f64,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
}

/// One tenant's rates and, while sending is paused, the alert message that paused it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantFeedback {
    pub tenant_id: Uuid,
    #[serde(flatten)]
    pub rates: Rates,
    pub sending_paused: Option<String>,
}

/// Rates and pause state of the listed tenants at `now`.
pub async fn for_tenants(
    c: &impl Sql,
    tenants: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<TenantFeedback>> {
    let rows = c
        .query(RATES, &[&tenants, &now])
        .await
        .context("reading reply, bounce and complaint rates")?;
    rows.iter()
        .map(|r| {
            let rates: Rates =
                serde_json::from_value(r.get(1)).context("reading mail_feedback_rates output")?;
            Ok(TenantFeedback {
                tenant_id: r.get(0),
                rates,
                sending_paused: r.get(2),
            })
        })
        .collect()
}

/// Whether `count` of `sends` passes `threshold` (with at least [`MIN_SAMPLE`] as divisor).
pub fn exceeds(count: i64, sends: i64, threshold: f64) -> bool {
    sends > 0 && count as f64 / sends.max(MIN_SAMPLE) as f64 > threshold
}

/// Raise the critical rate alerts whose condition holds; returns the types that opened.
/// After an acknowledgement the alert comes back only with a new bounce or complaint, so
/// a person's acknowledgement really resumes sending.
pub async fn evaluate_alerts(
    c: &impl Sql,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<&'static str>> {
    let Some(f) = for_tenants(c, &[tenant], now).await?.into_iter().next() else {
        return Ok(Vec::new());
    };
    let r = &f.rates;
    let rules = [
        (
            BOUNCE_RATE_ALERT,
            "bounce",
            r.bounces,
            BOUNCE_THRESHOLD,
            "bounced",
        ),
        (
            COMPLAINT_RATE_ALERT,
            "complaint",
            r.complaints,
            COMPLAINT_THRESHOLD,
            "drew a spam complaint",
        ),
    ];
    let mut opened = Vec::new();
    for (alert_type, kind, count, threshold, verb) in rules {
        if !exceeds(count, r.sends, threshold) {
            continue;
        }
        let row = c
            .query_one(ALERT_INPUTS, &[&tenant, &alert_type, &kind, &now])
            .await
            .context("reading rate alert history")?;
        let last_ack: Option<DateTime<Utc>> = row.get(0);
        let newest: Option<DateTime<Utc>> = row.get(1);
        if let (Some(ack), Some(newest)) = (last_ack, newest) {
            if newest <= ack {
                continue;
            }
        }
        let message = format!(
            "{count} of the last {} sends {verb} ({:.1} %, threshold {:.1} %): e-mail sending is paused until this alert is acknowledged",
            r.sends,
            count as f64 * 100.0 / r.sends as f64,
            threshold * 100.0
        );
        let metadata = json!({"rates": r, "threshold": threshold, "min_sample": MIN_SAMPLE});
        if crate::alerts::raise(c, tenant, alert_type, "critical", &message, metadata, now).await? {
            opened.push(alert_type);
        }
    }
    Ok(opened)
}

/// Prometheus text lines (exposition format 0.0.4) for the tenants' rates: gauges, one
/// series per tenant.
pub fn metrics_text(list: &[TenantFeedback]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, value: &dyn Fn(&TenantFeedback) -> f64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for t in list {
            out.push_str(&format!(
                "{name}{{tenant_id=\"{}\"}} {}\n",
                t.tenant_id,
                value(t)
            ));
        }
    };
    family(
        "autopilot_email_reply_ratio",
        "Share of the tenant's last 100 sends that got a reply (0..1).",
        &|t| t.rates.reply_rate,
    );
    family(
        "autopilot_email_bounce_ratio",
        "Share of the tenant's last 100 sends that bounced permanently (0..1).",
        &|t| t.rates.bounce_rate,
    );
    family(
        "autopilot_email_complaint_ratio",
        "Share of the tenant's last 100 sends that drew a spam complaint (0..1).",
        &|t| t.rates.complaint_rate,
    );
    family(
        "autopilot_email_sends_sampled",
        "Sends the tenant's rates are computed over (at most 100).",
        &|t| t.rates.sends as f64,
    );
    family(
        "autopilot_email_sending_paused",
        "1 while an unacknowledged bounce or complaint rate alert pauses the tenant's sending.",
        &|t| if t.sending_paused.is_some() { 1.0 } else { 0.0 },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_use_a_minimum_sample() {
        assert!(!exceeds(1, 3, BOUNCE_THRESHOLD));
        assert!(exceeds(2, 3, BOUNCE_THRESHOLD));
        assert!(!exceeds(5, 100, BOUNCE_THRESHOLD));
        assert!(exceeds(6, 100, BOUNCE_THRESHOLD));
        assert!(exceeds(1, 100, COMPLAINT_THRESHOLD));
        assert!(!exceeds(0, 100, COMPLAINT_THRESHOLD));
        assert!(!exceeds(0, 0, COMPLAINT_THRESHOLD));
    }

    #[test]
    fn metrics_have_one_help_and_type_per_family() {
        let t = TenantFeedback {
            tenant_id: Uuid::nil(),
            rates: Rates {
                sends: 10,
                bounce_rate: 0.1,
                ..Rates::default()
            },
            sending_paused: Some("x".into()),
        };
        let text = metrics_text(&[t]);
        assert_eq!(
            text.matches("# TYPE autopilot_email_bounce_ratio gauge")
                .count(),
            1
        );
        assert!(text.contains(
            "autopilot_email_bounce_ratio{tenant_id=\"00000000-0000-0000-0000-000000000000\"} 0.1\n"
        ));
        assert!(text.contains("autopilot_email_sending_paused{tenant_id=\"00000000-0000-0000-0000-000000000000\"} 1\n"));
    }
}
