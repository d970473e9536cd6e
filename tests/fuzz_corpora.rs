//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, seeds and every crash found
//! and fixed) through the fuzz targets' bodies, so `cargo test` catches a regression with
//! no fuzzer installed. See FUZZING.md for running the fuzzers themselves.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: an empty corpus tests nothing");
}

#[test]
fn client_hello_corpus() {
    replay("client_hello", mailgate::fuzzing::client_hello);
}

#[test]
fn content_decoder_corpus() {
    replay("content_decoder", mailgate::fuzzing::content_decoder);
}

#[test]
fn journal_corpus() {
    replay("journal", mailgate::fuzzing::journal);
}

#[test]
fn queue_log_corpus() {
    replay("queue_log", mailgate::fuzzing::queue_log);
}

#[test]
fn config_corpus() {
    replay("config", mailgate::fuzzing::config);
}

#[test]
fn session_corpus() {
    replay("session", mailgate::fuzzing::session);
    let _ = std::fs::remove_dir_all(mailgate::fuzzing::session_harness_dir());
}

/// The seeds Mailgate's own writers make are in the corpora (`fuzz/seeds.sh` writes them:
/// it runs this test with MAILGATE_WRITE_SEEDS=1).
#[test]
fn every_seed_is_in_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("MAILGATE_WRITE_SEEDS").is_some();
    for (target, name, bytes) in mailgate::fuzzing::seeds() {
        let path = root.join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&bytes[..]), "{}: missing or stale; run fuzz/seeds.sh", path.display());
    }
}
