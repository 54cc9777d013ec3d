//! What `run-cycle` is asked to do, as plain values (the command line fills them in).

use std::path::PathBuf;

use uuid::Uuid;

/// What started a cycle (recorded on the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trigger {
    #[default]
    Scheduled,
    Manual,
    Event,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Manual => "manual",
            Trigger::Event => "event",
        }
    }
}

/// How `run-cycle` runs (SPEC §1 `run-cycle`; durations in seconds).
#[derive(Debug, Clone)]
pub struct CycleOptions {
    /// Only these tenants (each must exist); empty: the enabled ones.
    pub tenants: Vec<Uuid>,
    /// Tenants run at the same time.
    pub concurrency: u32,
    /// Lease length; renewed every lease/3.
    pub lease: u64,
    /// A tenant's cycle is stopped and marked `timeout` after this long.
    pub tenant_timeout: u64,
    pub max_tenants: Option<u32>,
    pub trigger: Trigger,
    /// Only this shard of the enabled tenants (`None`: from the environment, else all).
    pub shard: Option<crate::shard::Shard>,
    /// Print the plan per tenant and write nothing.
    pub dry_run: bool,
    /// Print one JSON document.
    pub json: bool,
    /// What in-flight tenants get after SIGTERM/SIGINT before they are marked failed.
    pub grace: u64,
    /// Where the Prometheus metrics are written, if anywhere.
    pub metrics_file: Option<PathBuf>,
    /// Run tenants whose cycle already completed in this hour.
    pub force: bool,
    /// The whole invocation's time limit.
    pub deadline: u64,
    /// How long a lost database connection is retried.
    pub retry_window: u64,
}
