//! Durable directory updates with group commit.
//!
//! A new name in a directory (a spool entry linked into `queue/`, a Maildir file renamed
//! into `new/`) survives a crash only once the directory itself is fsynced. Concurrent
//! sessions and deliveries each need that for the same few directories, and one fsync
//! covers every change made before it started: so callers that arrive while a sync of
//! their directory is running wait for the next one, which then covers them all at once.
//! Under load this turns one directory fsync per message into one per batch; alone, a
//! caller pays exactly what a plain fsync costs.
//!
//! Blocking: call from a blocking thread (the spool and Maildir already do their file work
//! on one), or through [`sync_dir_async`].

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

#[derive(Default)]
struct State {
    /// Tickets handed out: one per change whose durability was asked for.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A caller is running the fsync now.
    running: bool,
}

#[derive(Default)]
struct DirState {
    state: Mutex<State>,
    done: Condvar,
}

fn dir_state(dir: &Path) -> Arc<DirState> {
    static DIRS: OnceLock<Mutex<HashMap<PathBuf, Arc<DirState>>>> = OnceLock::new();
    let mut dirs = DIRS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    dirs.entry(dir.to_owned()).or_default().clone()
}

/// Makes every change the caller has already made in `dir` durable (fsync of the
/// directory), sharing the fsync with concurrent callers. Returns only when an fsync that
/// started after this call did succeed; if that fsync fails, the error is returned to the
/// caller that ran it and the callers waiting on it try again themselves.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let st = dir_state(dir);
    let mut g = st.state.lock().unwrap_or_else(|e| e.into_inner());
    g.issued += 1;
    let ticket = g.issued;
    loop {
        if g.synced >= ticket {
            return Ok(());
        }
        if g.running {
            g = st.done.wait(g).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        // This caller runs the next fsync: it covers every ticket issued so far, since
        // each was issued after its change was made.
        g.running = true;
        let covers = g.issued;
        drop(g);
        let result = std::fs::File::open(dir).and_then(|d| d.sync_all());
        g = st.state.lock().unwrap_or_else(|e| e.into_inner());
        g.running = false;
        if result.is_ok() {
            g.synced = g.synced.max(covers);
        }
        st.done.notify_all();
        result?;
    }
}

/// [`sync_dir`] on the blocking pool.
pub async fn sync_dir_async(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || sync_dir(&dir)).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_all_return_after_a_sync_that_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    std::fs::write(path.join(format!("f{i}")), b"x").unwrap();
                    sync_dir(&path)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let st = dir_state(&path);
        let g = st.state.lock().unwrap();
        assert_eq!(g.issued, 16);
        assert_eq!(g.synced, 16, "the last sync covers every ticket");
        assert!(!g.running);
    }

    #[test]
    fn a_failed_sync_is_reported_and_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert!(sync_dir(&gone).is_err());
        let st = dir_state(&gone);
        assert_eq!(st.state.lock().unwrap().synced, 0);
        std::fs::create_dir(&gone).unwrap();
        sync_dir(&gone).unwrap();
        assert_eq!(st.state.lock().unwrap().synced, 2);
    }
}
