//! `autopilot ack-alert`: its arguments, handed to `alerts`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use uuid::Uuid;

use crate::alerts::{AckOptions, AckTarget, Severity};
use crate::error::AppError;
use crate::Context;

#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["alert_ids", "all"])))]
pub struct AckAlertArgs {
    /// Alerts to acknowledge (all or nothing).
    #[arg(value_name = "ALERT_ID", conflicts_with_all = ["all", "tenant"])]
    pub alert_ids: Vec<Uuid>,
    /// The tenant whose alerts `--all` acknowledges.
    #[arg(long, value_name = "UUID", requires = "all")]
    pub tenant: Option<Uuid>,
    /// Acknowledge every open alert of `--tenant` (narrowed by --type/--severity).
    #[arg(long, requires = "tenant")]
    pub all: bool,
    /// With --all: only alerts of this type.
    #[arg(long = "type", value_name = "ALERT_TYPE", requires = "all")]
    pub alert_type: Option<String>,
    /// With --all: only alerts of this severity.
    #[arg(long, value_enum, requires = "all")]
    pub severity: Option<SeverityArg>,
    /// Profile that acknowledges (must exist in the alert's tenant).
    #[arg(long, value_name = "PROFILE_ID")]
    pub by: Option<Uuid>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `--severity`, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Info,
    Warning,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Severity {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

pub(super) async fn run(ctx: &Context, args: AckAlertArgs) -> Result<u8> {
    let target = match (args.all, args.tenant) {
        (true, Some(tenant)) => AckTarget::AllOf {
            tenant,
            alert_type: args.alert_type,
            severity: args.severity.map(Severity::from),
        },
        // clap's group and `requires` make this unreachable; refused as usage all the same.
        (true, None) => return Err(AppError::usage("--all needs --tenant")),
        (false, _) => AckTarget::Ids(args.alert_ids),
    };
    let options = AckOptions {
        target,
        by: args.by,
        json: args.json,
    };
    crate::alerts::run_ack(ctx, &options).await
}
