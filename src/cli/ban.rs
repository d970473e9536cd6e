//! `mailgate ban list|add|remove`: the bans of `crate::ops` (made by `[auth_limits]` or by
//! hand), printed as a table or JSON. A change is told to a running server at once.

use super::{cli_error, print_json, Format};
use crate::directory::{Ban, BanKind};
use crate::ops::{BanRequest, BanSelector, Caller, Ops};
use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum BanCmd {
    /// Bans in force, newest first.
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Refuse AUTH from an address or network, or for a login, for a time.
    Add {
        #[command(flatten)]
        target: Target,
        /// How long: 90s, 30m, 2h, 7d (default: [auth_limits] ban_time).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban before its end.
    Remove {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub(super) struct Target {
    /// An address (192.0.2.7) or a network (192.0.2.0/24).
    #[arg(long)]
    address: Option<String>,
    /// A login name, from any address.
    #[arg(long)]
    login: Option<String>,
}

impl Target {
    fn kind_and_target(self) -> (BanKind, String) {
        match (self.address, self.login) {
            (Some(a), _) => (BanKind::Address, a),
            (None, l) => (BanKind::Login, l.unwrap_or_default()),
        }
    }
}

const FLAGS: &[(&str, &str)] = &[("target", "--address/--login"), ("duration", "--for"), ("reason", "--reason")];

pub(super) async fn run(ops: &Ops, c: &Caller, cmd: BanCmd) -> anyhow::Result<()> {
    match cmd {
        BanCmd::List { format } => {
            let bans = ops.list_bans(c).await?;
            if format == Format::Json {
                return print_json(&bans);
            }
            print_table(&bans);
        }
        BanCmd::Add { target, duration, reason } => {
            let (kind, target) = target.kind_and_target();
            let r = BanRequest { kind, target, duration, reason: reason.unwrap_or_default() };
            let b = ops.add_ban(c, &r).await.map_err(cli_error(FLAGS))?;
            println!("{} {} banned at AUTH until {}", b.kind.as_str(), b.target, time(b.expires_at));
        }
        BanCmd::Remove { target } => {
            let (kind, target) = target.kind_and_target();
            let b = ops.remove_ban(c, &BanSelector::Target(kind, target)).await.map_err(cli_error(FLAGS))?;
            println!("ban of {} {} lifted", b.kind.as_str(), b.target);
        }
    }
    Ok(())
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
}

fn print_table(bans: &[Ban]) {
    if bans.is_empty() {
        println!("no bans in force");
        return;
    }
    println!("{:<6} {:<8} {:<32} {:<24} {:<14} REASON", "ID", "KIND", "TARGET", "UNTIL", "BY");
    for b in bans {
        println!("{:<6} {:<8} {:<32} {:<24} {:<14} {}", b.id, b.kind.as_str(), b.target, time(b.expires_at), b.created_by, b.reason);
    }
}
