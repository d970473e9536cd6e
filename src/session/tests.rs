//! In-memory session tests: the state machine fed with bytes, no sockets. The directory
//! and the spool are the real ones, in a temporary directory.

use super::*;
use crate::config::Config;
use crate::directory::Directory;
use crate::queue::Spool;

struct Harness {
    _dir: tempfile::TempDir,
    ctx: Arc<SessionContext>,
    spool: Arc<Spool>,
}

async fn harness(extra: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "hostname = \"mx.test\"\ndata_dir = \"data\"\n[[tls.certificate]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
         [[endpoint]]\nname = \"sub\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"starttls\"\n{extra}"
    );
    let config = Arc::new(Config::from_toml(&dir.path().join("m.toml"), &toml).unwrap());
    let directory = Directory::open(&config.directory_path()).await.unwrap();
    directory.add_tenant("contoso").await.unwrap();
    directory.add_domain("contoso.test", "contoso").await.unwrap();
    directory.add_user("alice@contoso.test", "alice-password", true).await.unwrap();
    directory.add_user("scanner@contoso.test", "scanner-password", true).await.unwrap();
    let (spool, _rx) = Spool::open(&config.spool_dir()).unwrap();
    std::mem::forget(_rx); // keep the channel open: commits notify it
    let ctx = context(config, directory, spool.clone(), system_clock());
    Harness { _dir: dir, ctx, spool }
}

fn conn() -> ConnectionInfo {
    let endpoint = Arc::new(Endpoint {
        name: "sub".into(),
        listen: vec![],
        tls_mode: TlsMode::Starttls,
        tls_versions: vec![crate::tls::TlsVersion::Tls12, crate::tls::TlsVersion::Tls13],
        legacy_tls: crate::config::LegacyTls::Explain,
        schedule: vec![],
        legacy_requires_opt_in: true,
        tls: crate::tls::profile::TlsPolicy::new(&[crate::tls::TlsVersion::Tls12, crate::tls::TlsVersion::Tls13], None, None, None).unwrap(),
    });
    ConnectionInfo { endpoint, peer: "127.0.0.1:40000".parse().unwrap() }
}

fn tls() -> Option<TlsFacts> {
    Some(TlsFacts {
        version: crate::tls::TlsVersion::Tls13,
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        sni: None,
        fingerprint: None,
        offered_max: None,
    })
}

/// Feeds `input` and returns the reply lines and the flow.
async fn feed(s: &mut Session, input: &[u8]) -> (Vec<String>, Flow) {
    let mut buf = input.to_vec();
    let mut out = Vec::new();
    let flow = s.ingest(&mut buf, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    (text.lines().map(String::from).collect(), flow)
}

fn codes(lines: &[String]) -> Vec<&str> {
    lines.iter().filter(|l| l.as_bytes().get(3) == Some(&b' ')).map(|l| &l[..3]).collect()
}

#[tokio::test]
async fn pipelined_transaction_in_one_buffer() {
    let h = harness("").await;
    let mut s = Session::new(h.ctx.clone(), conn(), tls());
    let (lines, flow) = feed(
        &mut s,
        b"EHLO c\r\nAUTH PLAIN AGFsaWNlQGNvbnRvc28udGVzdABhbGljZS1wYXNzd29yZA==\r\nMAIL FROM:<alice@contoso.test>\r\n\
          RCPT TO:<scanner@contoso.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(flow, Flow::Continue);
    assert_eq!(codes(&lines), ["250", "235", "250", "250", "354"]);
    // Content split at awkward places across calls.
    for part in [&b"Subject: x\r\n\r\nbody\r"[..], b"\n.", b"\r", b"\n"] {
        let (lines, _) = feed(&mut s, part).await;
        if part == b"\n" {
            assert!(lines[0].starts_with("250 2.0.0 OK queued as "), "{lines:?}");
        } else {
            assert!(lines.is_empty());
        }
    }
    assert_eq!(h.spool.queued_ids().unwrap().len(), 1);
    assert_eq!(s.messages(), 1);
}

#[tokio::test]
async fn ehlo_advertises_by_state() {
    let h = harness("").await;
    let mut plain = Session::new(h.ctx.clone(), conn(), None);
    let (lines, _) = feed(&mut plain, b"EHLO c\r\n").await;
    let all = lines.join("\n");
    assert!(all.contains("STARTTLS") && !all.contains("AUTH"));
    for ext in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "SIZE 36700160"] {
        assert!(all.contains(ext), "{ext} missing: {all}");
    }
    let mut secure = Session::new(h.ctx.clone(), conn(), tls());
    let (lines, _) = feed(&mut secure, b"EHLO c\r\n").await;
    let all = lines.join("\n");
    assert!(!all.contains("STARTTLS") && all.contains("AUTH PLAIN LOGIN"));
    let (lines, _) = feed(&mut secure, b"HELO c\r\n").await;
    assert_eq!(lines, ["250 mx.test Hello c"]);
}

#[tokio::test]
async fn starttls_discards_buffered_input() {
    let h = harness("").await;
    let mut s = Session::new(h.ctx.clone(), conn(), None);
    let mut buf = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<x@y.test>\r\n".to_vec();
    let mut out = Vec::new();
    assert_eq!(s.ingest(&mut buf, &mut out).await, Flow::StartTls);
    assert!(buf.is_empty(), "plaintext after STARTTLS must be dropped");
    assert!(String::from_utf8(out).unwrap().ends_with("220 2.0.0 Ready to start TLS\r\n"));
}

#[tokio::test]
async fn commands_before_ehlo_and_quit() {
    let h = harness("").await;
    let mut s = Session::new(h.ctx.clone(), conn(), tls());
    let (lines, _) = feed(&mut s, b"MAIL FROM:<alice@contoso.test>\r\n").await;
    assert!(lines[0].starts_with("503 5.5.1"));
    let (lines, _) = feed(&mut s, b"AUTH PLAIN AGFsaWNlQGNvbnRvc28udGVzdABhbGljZS1wYXNzd29yZA==\r\n").await;
    assert!(lines[0].starts_with("503 5.5.1 Send EHLO first"), "{lines:?}");
    let (lines, flow) = feed(&mut s, b"QUIT\r\nNOOP\r\n").await;
    assert_eq!(flow, Flow::Close);
    assert_eq!(lines.len(), 1, "nothing after QUIT is answered: {lines:?}");
    assert!(lines[0].starts_with("221 2.0.0"));
}

#[tokio::test]
async fn auth_plain_with_continuation_and_bad_base64() {
    let h = harness("").await;
    let mut s = Session::new(h.ctx.clone(), conn(), tls());
    feed(&mut s, b"EHLO c\r\n").await;
    let (lines, _) = feed(&mut s, b"AUTH PLAIN\r\n").await;
    assert_eq!(lines, ["334 "]);
    let (lines, _) = feed(&mut s, b"!!!notbase64\r\n").await;
    assert!(lines[0].starts_with("501 5.5.2"));
    let (lines, _) = feed(&mut s, b"AUTH CRAM-MD5\r\n").await;
    assert!(lines[0].starts_with("504 5.5.4"));
    let (lines, _) = feed(&mut s, b"AUTH PLAIN\r\n").await;
    assert_eq!(lines, ["334 "]);
    let (lines, _) = feed(&mut s, b"AGFsaWNlQGNvbnRvc28udGVzdABhbGljZS1wYXNzd29yZA==\r\n").await;
    assert_eq!(lines, ["235 2.7.0 Authentication successful"]);
    // After AUTH, EHLO no longer offers it.
    let (lines, _) = feed(&mut s, b"EHLO c\r\n").await;
    assert!(!lines.join("\n").contains("AUTH"));
    assert_eq!(s.user().unwrap().address, "alice@contoso.test");
}

#[tokio::test]
async fn empty_bdat_last_and_rset() {
    let h = harness("").await;
    let mut s = Session::new(h.ctx.clone(), conn(), tls());
    feed(&mut s, b"EHLO c\r\nAUTH PLAIN AGFsaWNlQGNvbnRvc28udGVzdABhbGljZS1wYXNzd29yZA==\r\n").await;
    let (lines, _) = feed(&mut s, b"MAIL FROM:<alice@contoso.test>\r\nRCPT TO:<scanner@contoso.test>\r\nBDAT 4\r\nabc\n").await;
    assert_eq!(codes(&lines), ["250", "250", "250"]);
    // RSET drops the half-received BDAT message.
    let (lines, _) = feed(&mut s, b"RSET\r\n").await;
    assert_eq!(codes(&lines), ["250"]);
    assert!(h.spool.queued_ids().unwrap().is_empty());
    assert_eq!(h.spool.incoming_count(), 0, "RSET must discard the partial message");
    let (lines, _) = feed(&mut s, b"MAIL FROM:<alice@contoso.test>\r\nRCPT TO:<scanner@contoso.test>\r\nBDAT 0 LAST\r\n").await;
    assert_eq!(codes(&lines), ["250", "250", "250"]);
    assert_eq!(h.spool.queued_ids().unwrap().len(), 1);
}
