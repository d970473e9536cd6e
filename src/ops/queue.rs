//! Queue operations (`crate::queue::ops` on the spool), scoped to a tenant and audited:
//! a tenant admin sees and acts on their tenant's messages only.

use super::{Caller, Notifier, Ops, OpsError, OpsResult};
use crate::queue::ops::{self as q, EntryView, OpError};
use crate::queue::state::Backoff;
use std::time::Duration;

/// Which queued messages to list.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    pub tenant: Option<String>,
    /// `held`, `deferred` (pending, not held) or `finishing` (nothing pending).
    pub state: Option<String>,
}

/// Whether a running server acted on a queue change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notified {
    /// The server ran the attempts the change made due (the CLI waits for them).
    ActedOn,
    /// The server was asked to look at the queue now (the API does not wait).
    Scheduled,
    /// Nothing needed telling (hold, delete).
    NotNeeded,
    /// No server runs on this data_dir: it applies at the next start.
    NoServer,
    /// Recorded, but the server did not confirm in time.
    NotConfirmed,
}

/// The state word of `queue list` and the filter.
pub fn entry_state(e: &EntryView) -> &'static str {
    if e.held {
        "held"
    } else if e.recipients.iter().any(|r| r.status == "pending") {
        "deferred"
    } else {
        "finishing"
    }
}

fn queue_error(e: OpError) -> OpsError {
    match e {
        OpError::NotFound(_) => OpsError::NotFound(e.to_string()),
        OpError::Busy(_) => OpsError::Busy(e.to_string()),
        OpError::BadId(_) => OpsError::invalid("id", e.to_string()),
        OpError::Io(e) => OpsError::Failed(format!("spool: {e}")),
    }
}

/// The queue changes, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    Retry,
    Hold,
    Release,
    Delete,
    Bounce,
}

impl QueueAction {
    fn name(self) -> &'static str {
        match self {
            QueueAction::Retry => "queue.retry",
            QueueAction::Hold => "queue.hold",
            QueueAction::Release => "queue.release",
            QueueAction::Delete => "queue.delete",
            QueueAction::Bounce => "queue.bounce",
        }
    }
}

impl Ops {
    fn backoff(&self) -> Backoff {
        Backoff { min: self.config.queue.backoff_min, max: self.config.queue.backoff_max }
    }

    pub async fn queue_list(&self, c: &Caller, f: &QueueFilter) -> OpsResult<Vec<EntryView>> {
        let tenant = c.tenant_filter(f.tenant.as_deref())?;
        if let Some(s) = f.state.as_deref().filter(|s| !["held", "deferred", "finishing"].contains(s)) {
            return Err(OpsError::invalid("state", format!("{s:?}: expected held, deferred or finishing")));
        }
        let entries = q::list(self.spool()?, self.backoff(), tenant.as_deref()).await.map_err(queue_error)?;
        Ok(entries.into_iter().filter(|e| f.state.as_deref().is_none_or(|s| entry_state(e) == s)).collect())
    }

    /// One message, if the caller may see it (else "not found", as for a missing one).
    pub async fn queue_show(&self, c: &Caller, id: &str) -> OpsResult<EntryView> {
        let e = q::show(self.spool()?, self.backoff(), id).await.map_err(queue_error)?;
        if !c.sees(&e.tenant) {
            return Err(queue_error(OpError::NotFound(id.to_string())));
        }
        Ok(e)
    }

    /// Retry, hold, release, delete or bounce one message: one audit record.
    pub async fn queue_act(&self, c: &Caller, id: &str, action: QueueAction) -> OpsResult<Notified> {
        self.queue_change(c, id, action).await?;
        Ok(match action {
            QueueAction::Hold | QueueAction::Delete => Notified::NotNeeded,
            _ => self.wake_runner().await,
        })
    }

    /// Marks every visible message for an immediate retry; returns how many.
    pub async fn queue_retry_all(&self, c: &Caller) -> OpsResult<(usize, Notified)> {
        let entries = self.queue_list(c, &QueueFilter::default()).await?;
        let mut n = 0;
        for e in entries.iter().filter(|e| !e.held) {
            match self.queue_change(c, &e.id, QueueAction::Retry).await {
                Ok(()) => n += 1,
                Err(OpsError::NotFound(_)) => {} // delivered meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok((n, if n > 0 { self.wake_runner().await } else { Notified::NotNeeded }))
    }

    /// One change of one message, if the caller may see it, and its audit record.
    async fn queue_change(&self, c: &Caller, id: &str, action: QueueAction) -> OpsResult<()> {
        let before = self.queue_show(c, id).await?;
        let spool = self.spool()?;
        let now = self.now().timestamp();
        match action {
            QueueAction::Retry => q::retry(spool, id, now),
            QueueAction::Hold => q::hold(spool, id, now),
            QueueAction::Release => q::release(spool, id, now),
            QueueAction::Bounce => q::bounce(spool, id, now),
            QueueAction::Delete => q::delete(spool, id, Duration::from_secs(30)).await,
        }
        .map_err(queue_error)?;
        let state = |e: &EntryView| serde_json::json!({ "state": entry_state(e), "held": e.held });
        let after = match action {
            QueueAction::Delete => None,
            _ => q::show(spool, self.backoff(), id).await.ok().map(|e| state(&e)),
        };
        self.dir_as(c).record_change(Some(&before.tenant), action.name(), id, Some(state(&before)), after).await?;
        Ok(())
    }

    /// Asks the runner to look at the queue now.
    async fn wake_runner(&self) -> Notified {
        match &self.notifier {
            Notifier::InProcess(tx) => {
                let (done, _) = tokio::sync::oneshot::channel();
                let _ = tx.try_send(done);
                Notified::Scheduled
            }
            Notifier::ControlSocket(socket) => match q::request_scan(socket, Duration::from_secs(600)).await {
                Ok(true) => Notified::ActedOn,
                Ok(false) => Notified::NoServer,
                Err(e) => {
                    self.warn(format!("recorded, but the server did not confirm: {e}"));
                    Notified::NotConfirmed
                }
            },
        }
    }
}
