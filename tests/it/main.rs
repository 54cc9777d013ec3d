//! The integration tests: one binary, a module per concern (mostly per SPEC section),
//! sharing one harness (`common`: the throwaway server, template databases, fixtures
//! and the race helper) and the loopback SMTP listener (`support/smtp`).

mod common;
#[path = "support/smtp.rs"]
mod smtp;

mod alerts;
mod cycle;
mod deploy;
mod docs;
mod doctor;
mod email;
mod email_faults;
mod engagement;
mod faults;
mod functions;
mod inbound;
mod libpq;
mod logging;
mod metrics;
mod migrate;
mod monitoring;
mod orders;
mod policy;
mod pooler;
mod prune;
mod salesmod;
mod scale;
mod schema;
mod security;
mod shard;
mod sql_files;
mod statements;
mod status;
mod tenant_admin;
mod tls;
