//! Bad input over real sockets: each vector asserts its reply code and that nothing was
//! queued or delivered where nothing should be.

mod common;

use common::{password, Raw, TestServer};
use std::time::Duration;

const ALICE: &str = "alice@contoso.test";

/// Nothing queued, nothing being received, nothing delivered.
async fn assert_nothing_stored(t: &TestServer) {
    // Give the runner no chance to hide a delivery: the spool must be empty and so the
    // Maildir (a committed message would sit in the spool or in a mailbox).
    let spool = t.spool_files();
    assert!(spool.is_empty(), "spool must be empty: {spool:?}");
    let mail = t.all_mail_files();
    assert!(mail.is_empty(), "no mailbox file expected: {mail:?}");
}

async fn open_transaction(r: &mut Raw) {
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    r.expect("RCPT TO:<scanner@contoso.test>", 250).await;
}

#[tokio::test]
async fn starttls_injection_is_discarded() {
    let t = TestServer::start().await;
    let mut r = Raw::plain(t.starttls_addr(), &t.cert_pem).await;
    r.expect("EHLO client.test", 250).await;
    // CVE-2011-0411: commands pipelined after STARTTLS in the same packet, in clear text.
    r.send(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<alice@contoso.test>\r\n").await;
    let (code, _) = r.reply().await;
    assert_eq!(code, 220);
    r.upgrade().await;
    // Had the injected NOOP run inside TLS, its 250 would arrive before EHLO's reply.
    let text = r.expect("EHLO client.test", 250).await;
    assert!(text.starts_with("250-mx.test Hello client.test"), "first reply in TLS must be EHLO's: {text}");
    assert!(text.contains("AUTH PLAIN LOGIN"));
    let text = r.expect("NOOP", 250).await;
    assert_eq!(text, "250 2.0.0 OK\r\n");
    // No transaction was opened by the injected MAIL.
    let (code, _) = r.cmd("RCPT TO:<scanner@contoso.test>").await;
    assert_eq!(code, 503);
}

/// Each SMTP smuggling vector: refused with 554 5.6.0, the smuggled command never runs,
/// nothing is queued or delivered.
#[tokio::test]
async fn smtp_smuggling_vectors_are_refused() {
    let t = TestServer::start().await;
    let vectors: [(&str, &[u8]); 6] = [
        ("LF.CRLF", b"\n.\r\n"),
        ("CRLF.LF", b"\r\n.\n"),
        ("LF.LF", b"\n.\n"),
        ("CR.CR", b"\r.\r"),
        ("CR.CRLF", b"\r.\r\n"),
        ("CRLF.CR", b"\r\n.\r"),
    ];
    for (name, eod) in vectors {
        let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
        open_transaction(&mut r).await;
        r.expect("DATA", 354).await;
        let mut payload = b"Subject: smuggle\r\n\r\nfirst".to_vec();
        payload.extend_from_slice(eod);
        payload.extend_from_slice(b"MAIL FROM:<alice@contoso.test>\r\nRCPT TO:<bob@fabrikam.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n");
        r.send(&payload).await;
        let (code, text) = r.reply().await;
        assert_eq!(code, 554, "{name}: {text}");
        assert!(text.contains("5.6.0") && text.contains("bare CR or LF"), "{name}: {text}");
        // The next reply belongs to our next command: nothing smuggled was executed.
        assert_eq!(r.expect("NOOP", 250).await, "250 2.0.0 OK\r\n", "{name}");
        let (code, _) = r.cmd("RCPT TO:<bob@fabrikam.test>").await;
        assert_eq!(code, 503, "{name}: no transaction may be open after the refusal");
        r.expect("QUIT", 221).await;
    }
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn bare_line_endings_can_be_normalized() {
    let t = TestServer::start_with("[smtp]\nbare_line_endings = \"normalize\"\n").await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    open_transaction(&mut r).await;
    r.expect("DATA", 354).await;
    r.send(b"Subject: n\r\n\r\na\nb\n.\nstill body\r\n.\r\n").await;
    let (code, _) = r.reply().await;
    assert_eq!(code, 250);
    let files = t.wait_for_mail("scanner@contoso.test", 1).await;
    let (_, body) = common::split_received(&files[0]);
    // The bare-LF "dot line" did not end the message; every line now ends in CRLF.
    assert_eq!(body, b"Subject: n\r\n\r\na\r\nb\r\n.\r\nstill body\r\n");
}

#[tokio::test]
async fn auth_rules() {
    let t = TestServer::start().await;
    // Before TLS: AUTH is not advertised and is refused with 538.
    let mut r = Raw::plain(t.starttls_addr(), &t.cert_pem).await;
    let ehlo = r.expect("EHLO client.test", 250).await;
    assert!(!ehlo.contains("AUTH"), "AUTH advertised before TLS: {ehlo}");
    assert!(ehlo.contains("STARTTLS"));
    let (code, text) = r.auth_plain(ALICE, password(ALICE)).await;
    assert_eq!(code, 538, "{text}");
    assert!(text.contains("5.7.11"));
    // MAIL before TLS: 530 5.7.0.
    let text = r.expect(&format!("MAIL FROM:<{ALICE}>"), 530).await;
    assert!(text.contains("5.7.0") && text.contains("STARTTLS"));

    // Wrong password and unknown user: the same 535 5.7.8.
    let mut r = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    let (c1, wrong) = r.auth_plain(ALICE, "not-the-password").await;
    let (c2, unknown) = r.auth_plain("nobody@contoso.test", "whatever-password").await;
    assert_eq!((c1, c2), (535, 535));
    assert_eq!(wrong, unknown, "must not reveal whether the user exists");
    assert!(wrong.contains("5.7.8"));
    // MAIL without AUTH under TLS: 530 5.7.0.
    let text = r.expect(&format!("MAIL FROM:<{ALICE}>"), 530).await;
    assert!(text.contains("Authentication required"));

    // SMTP AUTH disabled for the user: a distinct reply, after a correct password only.
    let changes = mailgate::directory::UserChanges { smtp_auth: Some(false), ..Default::default() };
    t.server().directory.set_user("scanner@contoso.test", &changes).await.unwrap();
    let mut r = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    let (code, text) = r.auth_plain("scanner@contoso.test", password("scanner@contoso.test")).await;
    assert_eq!(code, 535);
    assert!(text.contains("SMTP AUTH is disabled"), "{text}");
    let (_, wrong) = r.auth_plain("scanner@contoso.test", "wrong-password").await;
    assert!(wrong.contains("5.7.8"), "a wrong password must not learn the state: {wrong}");

    // AUTH LOGIN works, and "*" cancels an exchange.
    let mut r = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    assert_eq!(r.expect("AUTH LOGIN", 334).await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(r.expect("*", 501).await, "501 5.0.0 Authentication cancelled by the client\r\n");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    r.expect("AUTH LOGIN", 334).await;
    r.expect(&b64(ALICE), 334).await;
    r.expect(&b64(password(ALICE)), 235).await;
    r.expect("AUTH PLAIN", 503).await;
}

#[tokio::test]
async fn envelope_policy() {
    // This test makes a dozen errors on purpose; raise the per-session error budget.
    let t = TestServer::start_with("[limits]\nmax_errors = 50\n").await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    // Send-as: only one's own address.
    let text = r.expect("MAIL FROM:<bob@fabrikam.test>", 550).await;
    assert!(text.contains("5.7.1") && text.contains("may only send as"), "{text}");
    r.expect(&format!("MAIL FROM:<{}>", ALICE.to_uppercase()), 250).await;
    // Nested MAIL.
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 503).await;
    // Unknown user in an accepted domain.
    let text = r.expect("RCPT TO:<nobody@contoso.test>", 550).await;
    assert!(text.contains("5.1.1"));
    // Malformed addresses.
    let text = r.expect("RCPT TO:<not an address>", 501).await;
    assert!(text.contains("5.1.3"), "{text}");
    r.expect("RCPT TO:<@>", 501).await;
    // DATA with no valid recipient.
    let text = r.expect("DATA", 554).await;
    assert!(text.contains("5.5.1"));
    r.expect("RSET", 250).await;
    let text = r.expect("MAIL FROM:<bad address>", 501).await;
    assert!(text.contains("5.1.7") || text.contains("5.5.4"), "{text}");
    // Unknown parameters: 555.
    let text = r.expect(&format!("MAIL FROM:<{ALICE}> FOO=BAR"), 555).await;
    assert!(text.contains("5.5.4"));
    // Non-ASCII without SMTPUTF8.
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    let text = r.expect("RCPT TO:<jos\u{e9}@example.org>", 553).await;
    assert!(text.contains("5.6.7"));
    // Unknown command, sequence errors; the session survives.
    let text = r.expect("FROB", 500).await;
    assert!(text.contains("5.5.2"));
    r.expect("EXPN list", 502).await;
    r.expect("VRFY alice", 252).await;
    r.expect("HELP", 214).await;
    r.expect("NOOP", 250).await;
    r.expect("QUIT", 221).await;
    assert!(r.closed().await);
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn over_long_line_gets_500_and_session_survives() {
    let t = TestServer::start().await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    let long = format!("NOOP {}", "x".repeat(10_000));
    let text = r.expect(&long, 500).await;
    assert!(text.contains("5.5.2") && text.contains("Line too long"), "{text}");
    // One reply only for the whole long line, then business as usual.
    r.expect("NOOP", 250).await;
    open_transaction(&mut r).await;
}

#[tokio::test]
async fn size_limits() {
    let t = TestServer::start_with("[limits]\nmax_message_size = 2048\n").await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    let ehlo = r.expect("EHLO client.test", 250).await;
    assert!(ehlo.contains("SIZE 2048"));
    // Declared too big: refused at MAIL, before any data.
    let text = r.expect(&format!("MAIL FROM:<{ALICE}> SIZE=4096"), 552).await;
    assert!(text.contains("5.3.4"));
    // Actually too big: read to the end, not stored, 552, session goes on.
    open_transaction(&mut r).await;
    r.expect("DATA", 354).await;
    let mut data = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..100 {
        data.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    data.extend_from_slice(b".\r\n");
    r.send(&data).await;
    let (code, text) = r.reply().await;
    assert_eq!(code, 552, "{text}");
    r.expect("NOOP", 250).await;
    // BDAT over the limit.
    open_transaction(&mut r).await;
    let mut chunk = b"BDAT 3000 LAST\r\n".to_vec();
    chunk.extend(std::iter::repeat_n(b'a', 2998));
    chunk.extend_from_slice(b"\r\n");
    r.send(&chunk).await;
    let (code, _) = r.reply().await;
    assert_eq!(code, 552);
    r.expect("NOOP", 250).await;
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn too_many_recipients() {
    let t = TestServer::start_with("[limits]\nmax_recipients = 2\n").await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    r.expect("RCPT TO:<scanner@contoso.test>", 250).await;
    r.expect("RCPT TO:<bob@fabrikam.test>", 250).await;
    let text = r.expect("RCPT TO:<printer@fabrikam.test>", 452).await;
    assert!(text.contains("4.5.3"));
    // The message still goes to the accepted two.
    r.expect("DATA", 354).await;
    r.send(b"Subject: two\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(r.reply().await.0, 250);
    t.wait_for_mail("scanner@contoso.test", 1).await;
    t.wait_for_mail("bob@fabrikam.test", 1).await;
    assert!(t.mailbox("printer@fabrikam.test").is_empty());
}

#[tokio::test]
async fn client_vanishing_mid_data_leaves_nothing() {
    let t = TestServer::start().await;
    for bdat in [false, true] {
        let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
        open_transaction(&mut r).await;
        if bdat {
            r.send(b"BDAT 100000 LAST\r\nSubject: half\r\n\r\npart of it").await;
        } else {
            r.expect("DATA", 354).await;
            r.send(b"Subject: half\r\n\r\npart of it\r\n").await;
        }
        drop(r);
    }
    // The server notices the closed connection and removes the partial spool file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !t.spool_files().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "partial spool file left: {:?}", t.spool_files());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let t = TestServer::start_with("[limits]\nmax_errors = 3\n").await;
    let mut r = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    r.expect("FROB", 500).await;
    r.expect("FROB", 500).await;
    r.send(b"FROB\r\n").await;
    assert_eq!(r.reply().await.0, 500);
    let (code, text) = r.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.7.0"));
    assert!(r.closed().await);
}

#[tokio::test]
async fn idle_client_times_out_with_421() {
    let t = TestServer::start_with("[limits]\ncommand_timeout = 1\n").await;
    let mut r = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    // Waiting for the server's verdict, not sleeping: the reply arrives when it times out.
    let (code, text) = r.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.4.2"));
    assert!(r.closed().await);
}

#[tokio::test]
async fn bdat_and_pipelining() {
    let t = TestServer::start().await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    // BDAT before MAIL: the chunk is read, then 503; the session stays in sync.
    r.send(b"BDAT 5\r\nhello").await;
    assert_eq!(r.reply().await.0, 503);
    r.expect("NOOP", 250).await;
    // RFC 2920 + RFC 3030: a whole pipelined transaction in one write.
    let body1 = b"Subject: chunked\r\n\r\nfirst part, ";
    let body2 = b"second part\r\n";
    let mut p = format!("MAIL FROM:<{ALICE}>\r\nRCPT TO:<scanner@contoso.test>\r\nBDAT {}\r\n", body1.len()).into_bytes();
    p.extend_from_slice(body1);
    p.extend_from_slice(format!("BDAT {} LAST\r\n", body2.len()).as_bytes());
    p.extend_from_slice(body2);
    r.send(&p).await;
    let codes = [r.reply().await.0, r.reply().await.0, r.reply().await.0, r.reply().await.0];
    assert_eq!(codes, [250, 250, 250, 250]);
    let files = t.wait_for_mail("scanner@contoso.test", 1).await;
    let (_, body) = common::split_received(&files[0]);
    assert_eq!(body, [&body1[..], &body2[..]].concat());
    // DATA after BDAT in one transaction is a sequence error.
    open_transaction(&mut r).await;
    r.send(b"BDAT 3\r\nabc").await;
    assert_eq!(r.reply().await.0, 250);
    r.expect("DATA", 503).await;
}

#[tokio::test]
async fn implicit_endpoint_refuses_starttls() {
    let t = TestServer::start().await;
    let mut r = Raw::implicit(t.implicit_addr(), &t.cert_pem).await;
    let ehlo = r.expect("EHLO client.test", 250).await;
    assert!(!ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"));
    let text = r.expect("STARTTLS", 503).await;
    assert!(text.contains("TLS is already active"));
    let (code, _) = r.auth_plain(ALICE, password(ALICE)).await;
    assert_eq!(code, 235);
}

#[tokio::test]
async fn session_limit_answers_421() {
    let t = TestServer::start_with("[limits]\nmax_sessions = 1\n").await;
    let mut first = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    let mut tcp = tokio::net::TcpStream::connect(t.starttls_addr()).await.unwrap();
    let mut reply = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut reply).await.unwrap();
    assert!(reply.starts_with("421 4.3.2 Too many concurrent sessions"), "{reply:?}");
    // The admitted session is unaffected; once it ends, a new one is admitted.
    first.expect("NOOP", 250).await;
    first.expect("QUIT", 221).await;
    assert!(first.closed().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut tcp = tokio::net::TcpStream::connect(t.starttls_addr()).await.unwrap();
        let mut b = [0u8; 3];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut b).await.unwrap();
        if &b == b"220" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS 1.2 client on an endpoint that lists only TLS 1.3 completes the handshake and is
/// told why in SMTP, rather than getting a bare TLS alert.
#[tokio::test]
async fn unlisted_tls_version_gets_a_readable_421() {
    let t = TestServer::start_config(
        "[[endpoint]]\nname = \"only13\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"implicit\"\ntls_versions = [\"1.3\"]\n",
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut t.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(t.addr("only13")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the TLS 1.2 handshake completes");
    let mut r = Raw::from_stream(Box::new(tls), &t.cert_pem);
    let (code, text) = r.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.7.0 TLS 1.2 is not offered on this endpoint; use TLS 1.3"), "{text}");
    assert!(r.closed().await);
}
