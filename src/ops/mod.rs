//! The operations layer: every administrative operation, once, for the CLI, the admin
//! HTTP API and the dashboard (in the way mox's `admin` package serves its CLI and web
//! admin).
//!
//! Each operation takes a [`Caller`]: who acts (an actor, named in the audit log) and in
//! which [`Scope`] (the operator, or one tenant's admin). An operation refuses what the
//! scope does not cover; an object of another tenant is "not found", in the same words as
//! an object that does not exist, so a tenant admin learns nothing of other tenants. The
//! CLI and the HTTP handlers only parse, call and print: validation, scoping, audit
//! records and telling a running server of the change all happen here.

mod bans;
mod directory;
mod queue;
mod reports;

pub use bans::{parse_duration, BanRequest, BanSelector};
pub use directory::{KeyRequest, LegacyUpdate, NewUser};
pub use queue::{entry_state, Notified, QueueAction, QueueFilter};
pub use reports::{ReportQuery, WhatIfQuery};

use crate::config::Config;
use crate::directory::{AuditActor, Directory, DirectoryError};
use crate::queue::{ScanRequest, Spool};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Whose rights an operation runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything: every tenant, unattributed usage, tenant creation, the veto, metrics.
    Operator,
    /// One tenant's objects only.
    Tenant(String),
}

/// Who calls an operation, and with which rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `cli:<os user>` or `key:<id>`: what the audit log names.
    pub actor: String,
    pub scope: Scope,
}

impl Caller {
    /// The command line, run by an OS user on the server's disk: the operator.
    pub fn cli() -> Caller {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            // SAFETY: getuid has no preconditions and cannot fail.
            .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }));
        Caller { actor: format!("cli:{user}"), scope: Scope::Operator }
    }

    /// The holder of an API key.
    pub fn key(key: &crate::directory::ApiKey) -> Caller {
        let scope = match &key.tenant {
            Some(t) => Scope::Tenant(t.clone()),
            None => Scope::Operator,
        };
        Caller { actor: format!("key:{}", key.id), scope }
    }

    pub fn is_operator(&self) -> bool {
        self.scope == Scope::Operator
    }

    fn audit_actor(&self) -> AuditActor {
        let scope = match &self.scope {
            Scope::Operator => "operator".to_string(),
            Scope::Tenant(t) => t.clone(),
        };
        AuditActor { actor: self.actor.clone(), scope }
    }

    /// Whether this caller may see `tenant`'s objects.
    pub fn sees(&self, tenant: &str) -> bool {
        match &self.scope {
            Scope::Operator => true,
            Scope::Tenant(t) => t == tenant,
        }
    }

    /// The tenant a listing is limited to: a tenant admin's own (asking for another is
    /// "not found"), or what the operator asked for.
    fn tenant_filter(&self, requested: Option<&str>) -> Result<Option<String>, OpsError> {
        match (&self.scope, requested) {
            (Scope::Operator, r) => Ok(r.map(String::from)),
            (Scope::Tenant(own), None) => Ok(Some(own.clone())),
            (Scope::Tenant(own), Some(r)) if r == own => Ok(Some(own.clone())),
            (Scope::Tenant(_), Some(r)) => Err(no_tenant(r)),
        }
    }

    fn operator_only(&self, what: &str) -> Result<(), OpsError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(OpsError::Forbidden(format!("{what} is for the operator; a tenant admin's key cannot do it")))
        }
    }
}

fn no_tenant(name: &str) -> OpsError {
    OpsError::NotFound(format!("no tenant named {name:?}"))
}

/// Why an operation was not done, in a sentence for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A value is wrong; `field` names it (`until`, `networks[1]`, `address`).
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The object exists already, or its state forbids the change (the veto).
    #[error("{0}")]
    Conflict(String),
    /// The scope does not cover the operation (a tenant key on an operator operation).
    #[error("{0}")]
    Forbidden(String),
    /// Try again shortly (a message being delivered right now).
    #[error("{0}")]
    Busy(String),
    /// Our fault or the system's: a database or disk error.
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> OpsError {
        OpsError::Invalid { field: field.into(), message: message.into() }
    }

    /// A directory error, where `field` is the input an `Invalid` is about.
    fn from_directory(e: DirectoryError, field: &str) -> OpsError {
        match e {
            DirectoryError::Invalid(m) => OpsError::invalid(field, m),
            DirectoryError::NotFound(m) => OpsError::NotFound(m),
            DirectoryError::Exists(m) => OpsError::Conflict(format!("{m} already exists")),
            DirectoryError::Vetoed(m) => OpsError::Conflict(m),
            e @ (DirectoryError::Database(_) | DirectoryError::Hash(_) | DirectoryError::Migrate(_)) => OpsError::Failed(e.to_string()),
        }
    }
}

impl From<DirectoryError> for OpsError {
    fn from(e: DirectoryError) -> OpsError {
        OpsError::from_directory(e, "")
    }
}

pub type OpsResult<T> = Result<T, OpsError>;

/// How a running server learns of a change.
pub enum Notifier {
    /// The CLI: over the server's control socket, if one runs on this data_dir.
    ControlSocket(PathBuf),
    /// Inside the server: directory changes go through its own handle (its caches are
    /// cleared by the write); queue changes wake the runner.
    InProcess(tokio::sync::mpsc::Sender<ScanRequest>),
}

/// The operations, bound to one gateway's configuration, directory and spool.
pub struct Ops {
    pub config: Arc<Config>,
    dir: Directory,
    spool: OnceLock<Arc<Spool>>,
    usage: OnceLock<crate::usage::store::SqliteUsageStore>,
    notifier: Notifier,
    clock: crate::clock::Clock,
    warnings: Mutex<Vec<String>>,
}

impl Ops {
    /// For the CLI: opens the directory; the spool and usage store when first needed.
    pub async fn open(config: Arc<Config>) -> anyhow::Result<Ops> {
        let dir = Directory::open(&config.directory_path()).await?;
        let socket = config.control_socket();
        Ok(Ops::new(config, dir, None, Notifier::ControlSocket(socket), crate::clock::system_clock()))
    }

    /// For a running server: its own directory handle, spool and runner.
    pub fn new(
        config: Arc<Config>,
        dir: Directory,
        spool: Option<Arc<Spool>>,
        notifier: Notifier,
        clock: crate::clock::Clock,
    ) -> Ops {
        let cell = OnceLock::new();
        if let Some(s) = spool {
            let _ = cell.set(s);
        }
        Ops { config, dir, spool: cell, usage: OnceLock::new(), notifier, clock, warnings: Mutex::new(Vec::new()) }
    }

    /// The directory handle whose changes are audited as `caller`'s.
    fn dir_as(&self, caller: &Caller) -> Directory {
        self.dir.acting_as(caller.audit_actor())
    }

    /// The directory, for checks that change nothing (API key verification).
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    pub fn today(&self) -> chrono::NaiveDate {
        crate::clock::today(&self.clock)
    }

    fn spool(&self) -> OpsResult<&Arc<Spool>> {
        if let Some(s) = self.spool.get() {
            return Ok(s);
        }
        let s = Spool::attach(&self.config.spool_dir())
            .map_err(|e| OpsError::Failed(format!("cannot open the spool {}: {e}", self.config.spool_dir().display())))?;
        Ok(self.spool.get_or_init(|| s))
    }

    async fn usage_store(&self) -> OpsResult<&crate::usage::store::SqliteUsageStore> {
        if !self.config.data_dir.is_dir() {
            return Err(OpsError::Failed(format!(
                "data_dir {} does not exist: check {} (is this the server's configuration?)",
                self.config.data_dir.display(),
                self.config.path.display()
            )));
        }
        if let Some(store) = self.usage.get() {
            return Ok(store);
        }
        let store = crate::usage::store::SqliteUsageStore::open(&self.config.usage_path())
            .await
            .map_err(|e| OpsError::Failed(format!("cannot open the usage store: {e}")))?;
        Ok(self.usage.get_or_init(|| store))
    }

    /// Warnings an operation left for the person who asked (a server that could not be
    /// told of a change); the CLI prints them to stderr.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn warn(&self, w: String) {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }

    /// After a directory change: a running server clears its lookup cache before the
    /// operation returns, or the caller learns when the change applies.
    async fn directory_changed(&self) {
        if let Notifier::ControlSocket(socket) = &self.notifier {
            if let Err(e) = crate::queue::ops::notify_directory_changed(socket).await {
                self.warn(format!(
                    "the running server could not be told of this change ({e}); it applies within directory.cache_ttl ({} s)",
                    self.config.directory.cache_ttl
                ));
            }
        }
    }
}
