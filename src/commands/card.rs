//! `autopilot card requeue|close`: its arguments, handed to `cards`.

use anyhow::Result;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::cards::{CardChange, Resolution};
use crate::Context;

#[derive(Debug, Args, Clone)]
pub struct CardArgs {
    #[command(subcommand)]
    pub action: CardAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum CardAction {
    /// The e-mail was NOT delivered: back to approved, the next cycle sends it
    Requeue(CardIdArgs),
    /// The e-mail WAS delivered: mark the card done and count the touch
    Close(CardIdArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CardIdArgs {
    /// The parked card.
    #[arg(value_name = "CARD_ID")]
    pub card_id: Uuid,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(ctx: &Context, args: CardArgs) -> Result<u8> {
    let (resolution, card) = match args.action {
        CardAction::Requeue(a) => (Resolution::Requeue, a),
        CardAction::Close(a) => (Resolution::Close, a),
    };
    let change = CardChange {
        card_id: card.card_id,
        resolution,
        json: card.json,
    };
    crate::cards::run(ctx, &change).await
}
