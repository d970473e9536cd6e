//! `mailgate queue ...`: the queue operations of `crate::queue::ops`, printed as a table
//! or JSON. A change (retry, hold, release, bounce) is recorded in the spool and a running
//! server is asked to act on it at once; without a server it applies at the next start.

use super::{print_json, Format};
use crate::config::Config;
use crate::queue::ops::{self, EntryView};
use crate::queue::state::Backoff;
use crate::queue::Spool;
use anyhow::bail;
use clap::Subcommand;
use std::path::Path;
use std::time::Duration;

#[derive(Subcommand)]
pub(super) enum QueueCmd {
    /// Queued messages, oldest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// One message: envelope, each recipient's state, attempts and last error.
    Show {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Attempt delivery now, whatever the retry schedule.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every queued message.
        #[arg(long)]
        all: bool,
    },
    /// Stop delivery attempts for a message until `release`.
    Hold { id: String },
    /// Resume delivery attempts for a held message.
    Release { id: String },
    /// Remove a message without delivering it and without telling the sender.
    Delete { id: String },
    /// Give up on a message: its sender gets a delivery status notification (DSN).
    Bounce { id: String },
    /// Ask the running server to deliver what is due now, and wait for those attempts.
    Scan,
}

pub(super) async fn run(config_path: &Path, cmd: QueueCmd) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let spool = Spool::attach(&config.spool_dir())?;
    let backoff = Backoff { min: config.queue.backoff_min, max: config.queue.backoff_max };
    let socket = config.control_socket();
    match cmd {
        QueueCmd::List { tenant, format } => {
            let entries = ops::list(&spool, backoff, tenant.as_deref()).await?;
            if format == Format::Json {
                return print_json(&entries);
            }
            print_list(&entries);
        }
        QueueCmd::Show { id, format } => {
            let entry = ops::show(&spool, backoff, &id).await?;
            if format == Format::Json {
                return print_json(&entry);
            }
            print_entry(&entry);
        }
        QueueCmd::Retry { id, all } => {
            if all {
                let n = ops::retry_all(&spool, now())?;
                println!("{n} message(s) marked for an immediate retry");
            } else {
                let id = id.unwrap_or_default();
                ops::retry(&spool, &id, now())?;
                println!("{id}: marked for an immediate retry");
            }
            poke(&socket).await?;
        }
        QueueCmd::Hold { id } => {
            ops::hold(&spool, &id, now())?;
            println!("{id}: held; no delivery attempts until `mailgate queue release {id}`");
        }
        QueueCmd::Release { id } => {
            ops::release(&spool, &id, now())?;
            println!("{id}: released");
            poke(&socket).await?;
        }
        QueueCmd::Delete { id } => {
            ops::delete(&spool, &id, Duration::from_secs(30)).await?;
            println!("{id}: deleted (not delivered; the sender was not told)");
        }
        QueueCmd::Bounce { id } => {
            ops::bounce(&spool, &id, now())?;
            println!("{id}: marked for return to the sender");
            poke(&socket).await?;
        }
        QueueCmd::Scan => {
            if !ops::request_scan(&socket, Duration::from_secs(600)).await? {
                bail!("no server is running on {} (no control socket at {})", config.data_dir.display(), socket.display());
            }
            println!("scan done");
        }
    }
    Ok(())
}

/// Asks a running server to act now; says so when none runs.
async fn poke(socket: &Path) -> anyhow::Result<()> {
    match ops::request_scan(socket, Duration::from_secs(600)).await {
        Ok(true) => println!("the server has acted on it"),
        Ok(false) => println!("no server is running; this takes effect when `mailgate serve` next starts"),
        Err(e) => println!("recorded, but the server did not confirm: {e}"),
    }
    Ok(())
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn print_list(entries: &[EntryView]) {
    println!("{:<17} {:<19} {:<12} {:>9} {:<8} {:<24} {:<8} NEXT ATTEMPT / LAST ERROR", "ID", "RECEIVED", "TENANT", "SIZE", "STATE", "SENDER", "RCPTS");
    for e in entries {
        let pending = e.recipients.iter().filter(|r| r.status == "pending").count();
        let state = if e.held { "held" } else if pending > 0 { "deferred" } else { "finishing" };
        let last_error = e.recipients.iter().rev().find_map(|r| r.last_error.as_ref());
        let next = match (e.held, e.next_attempt) {
            (true, _) => "held".to_string(),
            (false, Some(t)) => time(t),
            (false, None) => "-".to_string(),
        };
        let sender = if e.sender.is_empty() { "<>" } else { e.sender.as_str() };
        println!(
            "{:<17} {:<19} {:<12} {:>9} {:<8} {:<24} {:<8} {}{}",
            e.id,
            time(e.received_at),
            e.tenant,
            e.size,
            state,
            sender,
            format!("{pending}/{}", e.recipients.len()),
            next,
            last_error.map(|f| format!("  ({f})")).unwrap_or_default()
        );
    }
    println!("{} message(s)", entries.len());
}

fn print_entry(e: &EntryView) {
    println!("id:          {}", e.id);
    println!("received:    {}", time(e.received_at));
    println!("tenant:      {}", e.tenant);
    println!("sender:      <{}>", e.sender);
    println!("auth user:   {}", if e.auth_user.is_empty() { "-" } else { &e.auth_user });
    println!("size:        {} octets", e.size);
    println!("held:        {}", if e.held { "yes" } else { "no" });
    println!("next attempt: {}", e.next_attempt.map(time).unwrap_or_else(|| "-".into()));
    println!("recipients:");
    for r in &e.recipients {
        let detail = match r.status {
            "delivered" => format!("to {}", r.delivered_to.as_deref().unwrap_or("?")),
            "failed" => format!("{} ({})", if r.bounced { "DSN sent" } else { "DSN pending" }, r.last_error.as_ref().map(|f| f.to_string()).unwrap_or_default()),
            _ => format!(
                "{} attempt(s){}",
                r.attempts,
                r.last_error.as_ref().map(|f| format!("; last error: {f}")).unwrap_or_default()
            ),
        };
        println!("  <{}> {}: {}", r.address, r.status, detail);
    }
}

/// The time the CLI's queue operations are stamped with.
fn now() -> i64 {
    (crate::clock::system_clock())().timestamp()
}
