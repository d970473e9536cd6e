//! Delivery targets: where a queued message goes once it leaves the spool.
//!
//! Every target follows the same steps, `begin -> body -> commit | abort`; for Maildir,
//! `commit` is the rename from `tmp/` into `new/`. Routing (which target a recipient gets)
//! is decided by the session and the queue, never here.

pub mod maildir;
