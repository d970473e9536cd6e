//! `mailgate queue ...`: the queue operations of `crate::ops`, printed as a table or JSON. A change (retry, hold, release, bounce) is recorded in the spool and a running
//! server is asked to act on it at once; without a server it applies at the next start.

use super::{print_json, Format};
use crate::ops::{Caller, Notified, Ops, QueueAction, QueueFilter};
use crate::queue::ops::EntryView;
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
    super::with_ops(config_path, |ops, c| Box::pin(queue(ops, c, cmd))).await
}

async fn queue(ops: &Ops, c: &Caller, cmd: QueueCmd) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::List { tenant, format } => {
            let entries = ops.queue_list(c, &QueueFilter { tenant, state: None }).await?;
            if format == Format::Json {
                return print_json(&entries);
            }
            print_list(&entries);
        }
        QueueCmd::Show { id, format } => {
            let entry = ops.queue_show(c, &id).await?;
            if format == Format::Json {
                return print_json(&entry);
            }
            print_entry(&entry);
        }
        QueueCmd::Retry { id, all } => {
            if all {
                let (n, notified) = ops.queue_retry_all(c).await?;
                println!("{n} message(s) marked for an immediate retry");
                say(notified);
            } else {
                let id = id.unwrap_or_default();
                let notified = ops.queue_act(c, &id, QueueAction::Retry).await?;
                println!("{id}: marked for an immediate retry");
                say(notified);
            }
        }
        QueueCmd::Hold { id } => {
            ops.queue_act(c, &id, QueueAction::Hold).await?;
            println!("{id}: held; no delivery attempts until `mailgate queue release {id}`");
        }
        QueueCmd::Release { id } => {
            let notified = ops.queue_act(c, &id, QueueAction::Release).await?;
            println!("{id}: released");
            say(notified);
        }
        QueueCmd::Delete { id } => {
            ops.queue_act(c, &id, QueueAction::Delete).await?;
            println!("{id}: deleted (not delivered; the sender was not told)");
        }
        QueueCmd::Bounce { id } => {
            let notified = ops.queue_act(c, &id, QueueAction::Bounce).await?;
            println!("{id}: marked for return to the sender");
            say(notified);
        }
        QueueCmd::Scan => {
            let socket = ops.config.control_socket();
            if !crate::queue::ops::request_scan(&socket, Duration::from_secs(600)).await? {
                bail!("no server is running on {} (no control socket at {})", ops.config.data_dir.display(), socket.display());
            }
            println!("scan done");
        }
    }
    Ok(())
}

/// What a running server did about a change.
fn say(n: Notified) {
    match n {
        Notified::ActedOn => println!("the server has acted on it"),
        Notified::NoServer => println!("no server is running; this takes effect when `mailgate serve` next starts"),
        Notified::Scheduled | Notified::NotNeeded | Notified::NotConfirmed => {}
    }
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn print_list(entries: &[EntryView]) {
    println!("{:<17} {:<19} {:<12} {:>9} {:<8} {:<24} {:<8} NEXT ATTEMPT / LAST ERROR", "ID", "RECEIVED", "TENANT", "SIZE", "STATE", "SENDER", "RCPTS");
    for e in entries {
        let pending = e.recipients.iter().filter(|r| r.status == "pending").count();
        let state = crate::ops::entry_state(e);
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
