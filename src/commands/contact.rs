//! `autopilot contact resume`: its arguments, handed to `inbound`.

use anyhow::Result;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::inbound::ResumeOptions;
use crate::Context;

#[derive(Debug, Args, Clone)]
pub struct ContactArgs {
    #[command(subcommand)]
    pub command: ContactCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum ContactCommand {
    /// End the hold a reply put on a contact: automatic e-mail to it may go on
    Resume(ContactResumeArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ContactResumeArgs {
    /// The contact whose automatic e-mail resumes.
    #[arg(value_name = "CONTACT_ID")]
    pub contact_id: Uuid,
    /// Profile that resumes it (must exist in the contact's tenant).
    #[arg(long, value_name = "PROFILE_ID")]
    pub by: Option<Uuid>,
    /// Why (recorded on the hold).
    #[arg(long)]
    pub note: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(ctx: &Context, args: ContactArgs) -> Result<u8> {
    let ContactCommand::Resume(r) = args.command;
    let options = ResumeOptions {
        contact_id: r.contact_id,
        by: r.by,
        note: r.note,
        json: r.json,
    };
    crate::inbound::run_contact(ctx, &options).await
}
