//! Mailgate: a multi-tenant SMTP submission gateway.
//!
//! Devices and applications submit mail with SMTP AUTH over TLS; Mailgate checks who
//! they are, spools each message durably and delivers it. The module layout follows
//! `ARCHITECTURE.md`: `listener` accepts connections and drives `session` (the SMTP
//! state machine) over `tls`; `session` asks `policy` (pure decisions), `directory`
//! (tenants, domains, users) and `queue` (the durable spool); the queue runner hands
//! messages to `delivery`. `cli` and `api` (the admin HTTP API) call the same
//! operations (`ops`). `docs/modules.md` draws who imports whom: arrows only point down.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod directory;
pub mod dsn;
pub mod durable;
pub mod fuzzing;
pub mod guard;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod queue;
pub mod reply;
pub mod server;
pub mod session;
pub mod tls;
pub mod usage;
