//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs` call them with libFuzzer's input), in
//! the library so that `tests/fuzz_corpora.rs` replays the committed corpora through the
//! same code under `cargo test`, with no fuzzer installed. Each takes arbitrary bytes and
//! panics only when an invariant breaks: anything a client, a file or a config can hold
//! must get an answer, never a panic.

use crate::session::content::ContentDecoder;

/// The ClientHello parser and the fingerprint made from it.
pub fn client_hello(data: &[u8]) {
    if let Ok(h) = crate::tls::hello::parse_client_hello(data) {
        assert!(!h.fingerprint.is_empty(), "a parsed hello has a fingerprint");
        // The same record parses to the same facts.
        let again = crate::tls::hello::parse_client_hello(data).expect("parses twice");
        assert_eq!((h.fingerprint, h.ciphers), (again.fingerprint, again.ciphers));
    }
}

/// DATA and BDAT decoding: whatever the input, decoding it in two pieces split anywhere
/// gives the same content and ends at the same byte as decoding it whole (a TCP read may
/// end anywhere). The first byte picks the split and the mode.
pub fn content_decoder(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else { return };
    let (bdat, normalize) = (control & 1 == 1, control & 2 == 2);
    let split = if input.is_empty() { 0 } else { (control as usize >> 2) * input.len() / 63 }.min(input.len());
    let new = || if bdat { ContentDecoder::bdat(normalize) } else { ContentDecoder::data(normalize) };
    let whole = decode_all(new(), &[input]);
    let pieces = decode_all(new(), &[&input[..split], &input[split..]]);
    assert_eq!(whole, pieces, "split at {split} of {} (bdat {bdat}, normalize {normalize})", input.len());
    if !normalize {
        // Without normalizing, content never grows: at most the input, CRLF stuffing removed.
        assert!(whole.0.len() <= input.len());
    }
}

/// Decodes `pieces` in turn until the end of data; the content, where it ended (offset in
/// the whole input), and whether a bare line ending was seen.
fn decode_all(mut d: ContentDecoder, pieces: &[&[u8]]) -> (Vec<u8>, Option<usize>, bool) {
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let (used, done) = d.decode(piece, &mut out);
        assert!(used <= piece.len());
        if done {
            return (out, Some(offset + used), d.bare_line_ending_seen());
        }
        offset += piece.len();
    }
    d.finish(&mut out);
    (out, None, d.bare_line_ending_seen())
}

/// The spool journal's segment parser (a file after any crash).
pub fn journal(data: &[u8]) {
    let (records, _torn) = crate::queue::journal::parse(data);
    let total: usize = records.iter().map(|(id, bytes)| id.len() + bytes.len()).sum();
    assert!(total <= data.len(), "records hold more than the segment");
}

/// The queue entry's log fold (a `.log` file as a crash or a hand left it).
pub fn queue_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let recipients = ["a@contoso.test".to_string(), "b@contoso.test".to_string()];
    let _ = crate::queue::state::EntryState::new(&recipients, &text);
}

/// The configuration loader: any text is a configuration or an error naming why.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = crate::config::Config::from_toml(std::path::Path::new("/nonexistent/fuzz.toml"), &text) {
        assert!(!e.to_string().is_empty());
    }
}

/// The SMTP session fed arbitrary bytes: commands in any state (before and after STARTTLS,
/// AUTH exchanges, DATA and BDAT content), cut into reads at any size. The first byte
/// picks whether the session starts inside TLS (bit 0) and the read size (the rest: 0
/// means all at once). Every reply line must be well formed (RFC 5321 §4.2: a 2xx-5xx
/// code, `-` or space, at most 512 octets with its CRLF, §4.5.3.1.5), a session that
/// says STARTTLS must have dropped what followed in clear text (RFC 3207 §4.2), and
/// input not consumed must be waiting for more, never lost.
pub fn session(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else { return };
    let h = harness();
    let read = match (control >> 1) as usize {
        0 => input.len().max(1),
        n => n,
    };
    h.runtime.block_on(async {
        let mut session = crate::session::Session::new(h.ctx.clone(), h.conn.clone(), (control & 1 == 1).then(tls_facts));
        let mut buf = Vec::new();
        check_replies(&session.greeting().to_text());
        for chunk in input.chunks(read) {
            buf.extend_from_slice(chunk);
            let mut out = Vec::new();
            let flow = session.ingest(&mut buf, &mut out).await;
            check_replies(std::str::from_utf8(&out).expect("replies are UTF-8"));
            match flow {
                crate::session::Flow::Continue => {}
                crate::session::Flow::StartTls => {
                    assert!(buf.is_empty(), "clear text after STARTTLS kept for the TLS session");
                    session = crate::session::Session::new(h.ctx.clone(), h.conn.clone(), Some(tls_facts()));
                }
                crate::session::Flow::Close => break,
            }
        }
    });
    h.clean_spool();
}

/// Each line of `out`: three digits 2xx-5xx, `-` or space, text, CRLF, 512 octets at most.
fn check_replies(out: &str) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with("\r\n"), "replies end with CRLF: {out:?}");
    for line in out[..out.len() - 2].split("\r\n") {
        let b = line.as_bytes();
        assert!(b.len() >= 4 && (b'2'..=b'5').contains(&b[0]) && b[1..3].iter().all(u8::is_ascii_digit), "bad reply line {line:?}");
        assert!(b[3] == b' ' || b[3] == b'-', "bad reply line {line:?}");
        assert!(!line.contains(['\r', '\n']), "reply line holds a line break: {line:?}");
        assert!(line.len() + 2 <= 512, "reply line of {} octets: {line:?}", line.len() + 2);
    }
}

fn tls_facts() -> crate::tls::TlsFacts {
    crate::tls::TlsFacts {
        version: crate::tls::TlsVersion::Tls13,
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        sni: None,
        fingerprint: None,
        offered_max: None,
    }
}

/// One directory and spool for all runs of the session target (a fresh one per run would
/// spend the time on SQLite, not on the session), on tmpfs where there is one.
struct SessionHarness {
    runtime: tokio::runtime::Runtime,
    ctx: std::sync::Arc<crate::session::SessionContext>,
    conn: crate::session::ConnectionInfo,
    spool: std::sync::Arc<crate::queue::Spool>,
    commits: std::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

/// Where the session target keeps its directory and spool (removed by the replay test).
pub fn session_harness_dir() -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    base.join(format!("mailgate-fuzz-{}", std::process::id()))
}

impl SessionHarness {
    /// Drops what the run queued, so that the spool stays small over millions of runs.
    fn clean_spool(&self) {
        let mut rx = self.commits.lock().expect("not poisoned");
        while rx.try_recv().is_ok() {}
        for id in self.spool.queued_ids().unwrap_or_default() {
            let _ = self.spool.remove(&id);
        }
    }
}

fn harness() -> &'static SessionHarness {
    static HARNESS: std::sync::OnceLock<SessionHarness> = std::sync::OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = session_harness_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("harness directory");
        let toml = "hostname = \"mx.fuzz.test\"\ndata_dir = \"data\"\n[[tls.certificate]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             [[endpoint]]\nname = \"sub\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"starttls\"\n\
             [limits]\nmax_message_size = 65536\nmax_recipients = 20\nmax_errors = 50\nmax_line_length = 1024\n\
             [auth_limits]\nexempt = [\"127.0.0.0/8\"]\n";
        let config = std::sync::Arc::new(crate::config::Config::from_toml(&dir.join("m.toml"), toml).expect("harness config"));
        let (ctx, spool, rx) = runtime.block_on(async {
            let directory = crate::directory::Directory::open(&config.directory_path()).await.expect("directory");
            directory.add_tenant("contoso").await.expect("tenant");
            directory.add_domain("contoso.test", "contoso").await.expect("domain");
            // Cheap argon2id hashes (verification takes its cost from the hash): a wrong
            // password costs microseconds, not the default tens of milliseconds.
            crate::directory::preset_dummy_hash(cheap_hash("mailgate-dummy"));
            for (address, password, smtp_auth) in [("alice@contoso.test", "alice-password", true), ("printer@contoso.test", "printer-password", false)] {
                directory.add_user_with_hash(address.into(), "contoso".into(), cheap_hash(password), smtp_auth).await.expect("user");
            }
            let (spool, rx) = crate::queue::Spool::open(&config.spool_dir()).expect("spool");
            (crate::session::context(config.clone(), directory, spool.clone(), crate::clock::system_clock()), spool, rx)
        });
        let conn = crate::session::ConnectionInfo { endpoint: std::sync::Arc::new(config.endpoints[0].clone()), peer: "127.0.0.1:40000".parse().expect("address") };
        SessionHarness { runtime, ctx, conn, spool, commits: std::sync::Mutex::new(rx) }
    })
}

fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"mailgate-fuzz-salt").expect("salt");
    argon.hash_password(password.as_bytes(), &salt).expect("hash").to_string()
}

/// Seed inputs made with Mailgate's own writers (`fuzz/seeds.sh` adds ClientHellos made by
/// Python's OpenSSL): `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::queue::state::Record;
    let mut out = Vec::new();
    for (i, content) in [&b"Subject: a\r\n\r\nbody\r\n.\r\n"[..], b"..dot\r\n.\r\n", b"bare\nlf\r\n.\r\n", b"cr\r\r\n.\r", b"\r\n.\r\n", b"no end"].iter().enumerate() {
        for control in [0u8, 1, 2, 3, 0x80, 0xfd] {
            out.push(("content_decoder", format!("seed-{i}-{control:02x}"), [&[control][..], content].concat()));
        }
    }
    let mut segment = Vec::new();
    crate::queue::journal::encode_into(&mut segment, "20261203T120000-0001", b"{\"from\":\"a@contoso.test\"}\nbody");
    crate::queue::journal::encode_into(&mut segment, "20261203T120000-0002", b"");
    out.push(("journal", "seed-two-records".into(), segment.clone()));
    out.push(("journal", "seed-torn".into(), segment[..segment.len() - 3].to_vec()));
    let failure = crate::delivery::Failure::permanent("550 5.1.1 no such user");
    let log: String = [
        Record::Deferred { rcpt: "a@contoso.test".into(), at: 10, failure: crate::delivery::Failure::temporary("451 4.3.0 later") },
        Record::Delivered { rcpt: "a@contoso.test".into(), at: 20, to: "maildir".into() },
        Record::Failed { rcpt: "b@contoso.test".into(), at: 30, failure },
        Record::Bounced { rcpts: vec!["b@contoso.test".into()], at: 31, dsn: Some("20261203T120000-0003".into()) },
        Record::Hold { at: 40 },
        Record::Release { at: 41 },
        Record::Retry { at: 42 },
        Record::Bounce { at: 43 },
        Record::Warned { at: 44, dsn: None },
    ]
    .iter()
    .map(Record::line)
    .collect();
    out.push(("queue_log", "seed-all-records".into(), log.into_bytes()));
    out.push(("queue_log", "seed-torn".into(), b"{\"t\":\"delivered\",\"rcpt\":\"a@con".to_vec()));
    let auth = "AUTH PLAIN AGFsaWNlQGNvbnRvc28udGVzdABhbGljZS1wYXNzd29yZA==\r\n";
    let mail = "MAIL FROM:<alice@contoso.test> SIZE=100\r\nRCPT TO:<printer@contoso.test>\r\n";
    for (name, control, text) in [
        ("seed-starttls", 0u8, format!("EHLO printer\r\nSTARTTLS\r\nEHLO printer\r\n{auth}{mail}DATA\r\nSubject: a\r\n\r\n..dot\r\n.\r\nQUIT\r\n")),
        ("seed-tls-bytewise", 2, format!("EHLO p\r\n{auth}{mail}DATA\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")),
        ("seed-bdat", 1, format!("EHLO p\r\n{auth}{mail}BDAT 5\r\nab\r\nBDAT 0 LAST\r\nQUIT\r\n")),
        ("seed-auth-login", 15, "ehlo p\r\nauth login\r\nYWxpY2VAY29udG9zby50ZXN0\r\nd3Jvbmc=\r\nAUTH LOGIN YWxpY2VAY29udG9zby50ZXN0\r\n*\r\nHELO p \r\nVRFY x\r\nQUIT\r\n".into()),
        ("seed-disabled-user", 1, "EHLO p\r\nAUTH PLAIN AHByaW50ZXJAY29udG9zby50ZXN0AHByaW50ZXItcGFzc3dvcmQ=\r\nMAIL FROM:<x@y.test>\r\n".into()),
    ] {
        out.push(("session", name.into(), [&[control][..], text.as_bytes()].concat()));
    }
    out.push(("config", "seed-example".into(), include_bytes!("../mailgate.example.toml").to_vec()));
    out.push(("config", "seed-minimal".into(), b"data_dir = \"d\"\n[[tls.certificate]]\ncert = \"c\"\nkey = \"k\"\n[[endpoint]]\nname = \"e\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"starttls\"\n".to_vec()));
    out
}
