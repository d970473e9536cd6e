//! Delivery with real clients we did not write: Python's smtplib (STARTTLS and implicit
//! TLS), swaks, curl and lettre. Each message must arrive byte-exact, plus our Received
//! header, in the recipient's Maildir.

mod common;

use common::{password, split_received, TestServer};
use std::path::Path;
use std::process::Output;
use tokio::process::Command;

/// A message with CRLF endings, a dot-led line (dot-stuffing must round-trip) and 8-bit text.
fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: alice@contoso.test\r\nTo: scanner@contoso.test\r\nSubject: {tag}\r\nMessage-ID: <{tag}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello from {tag}.\r\n.leading dot line\r\n..two dots\r\nGr\u{fc}\u{df}e\r\n"
    )
    .into_bytes()
}

fn write_message(t: &TestServer, tag: &str) -> (std::path::PathBuf, Vec<u8>) {
    let bytes = message(tag);
    let path = t.dir.path().join(format!("{tag}.eml"));
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that the mailbox holds exactly `sent` behind a Received header naming TLS and the sender.
async fn assert_delivered(t: &TestServer, rcpt: &str, sent: &[u8], tls_version: &str) {
    let files = t.wait_for_mail(rcpt, 1).await;
    assert_eq!(files.len(), 1);
    let (received, body) = split_received(&files[0]);
    assert_eq!(body, sent, "content must arrive byte-exact");
    assert!(received.contains(&format!("(using {tls_version} with cipher ")), "{received}");
    assert!(received.contains("(authenticated sender: alice@contoso.test)"), "{received}");
    assert!(received.contains("with ESMTPSA id "), "{received}");
    let spool = t.settled_spool().await;
    assert!(spool.iter().all(|f| !f.to_string_lossy().ends_with(".msg")), "left in the spool: {spool:?}");
}

async fn smtplib(t: &TestServer, mode: &str, port: u16, file: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtplib_send.py");
    Command::new("python3")
        .arg(script)
        .args([mode, "localhost", &port.to_string()])
        .arg(&t.cert_path)
        .args(["alice@contoso.test", password("alice@contoso.test"), "alice@contoso.test", "scanner@contoso.test"])
        .arg(file)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_starttls() {
    let t = TestServer::start().await;
    let (file, sent) = write_message(&t, "smtplib-starttls");
    let out = smtplib(&t, "starttls", t.starttls_addr().port(), &file).await;
    check(&out, "smtplib starttls");
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused: {}"));
    assert_delivered(&t, "scanner@contoso.test", &sent, "TLSv1.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_implicit_tls() {
    let t = TestServer::start().await;
    let (file, sent) = write_message(&t, "smtplib-implicit");
    let out = smtplib(&t, "implicit", t.implicit_addr().port(), &file).await;
    check(&out, "smtplib implicit");
    assert_delivered(&t, "scanner@contoso.test", &sent, "TLSv1.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_starttls_tls12() {
    let t = TestServer::start().await;
    let (file, sent) = write_message(&t, "swaks");
    // swaks ends the data with its own CRLF before ".": give it the message without its
    // final CRLF so that what it transmits is exactly `sent`.
    std::fs::write(&file, &sent[..sent.len() - 2]).unwrap();
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &t.starttls_addr().port().to_string()])
        .args(["--tls", "--tls-protocol", "tlsv1_2", "--auth", "PLAIN"])
        .args(["--auth-user", "alice@contoso.test", "--auth-password", password("alice@contoso.test")])
        .args(["--from", "alice@contoso.test", "--to", "scanner@contoso.test", "--ehlo", "client.test"])
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .output()
        .await
        .expect("swaks must be installed (.ci/run installs it)");
    check(&out, "swaks");
    assert!(String::from_utf8_lossy(&out.stdout).contains("250 2.0.0 OK queued as"));
    assert_delivered(&t, "scanner@contoso.test", &sent, "TLSv1.2").await;
}

async fn curl(t: &TestServer, url: String, file: &Path) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--ssl-reqd", "--cacert"])
        .arg(&t.cert_path)
        .args(["--url", &url])
        .args(["--user", &format!("alice@contoso.test:{}", password("alice@contoso.test"))])
        .args(["--mail-from", "alice@contoso.test", "--mail-rcpt", "scanner@contoso.test"])
        .arg("--upload-file")
        .arg(file)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_starttls() {
    let t = TestServer::start().await;
    let (file, sent) = write_message(&t, "curl-starttls");
    let out = curl(&t, format!("smtp://localhost:{}", t.starttls_addr().port()), &file).await;
    check(&out, "curl smtp --ssl-reqd");
    assert_delivered(&t, "scanner@contoso.test", &sent, "TLSv1.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_implicit_tls() {
    let t = TestServer::start().await;
    let (file, sent) = write_message(&t, "curl-implicit");
    let out = curl(&t, format!("smtps://localhost:{}", t.implicit_addr().port()), &file).await;
    check(&out, "curl smtps");
    assert_delivered(&t, "scanner@contoso.test", &sent, "TLSv1.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_starttls_and_implicit() {
    use lettre::address::Envelope;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let t = TestServer::start().await;
    let params = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(t.cert_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let creds = Credentials::new("alice@contoso.test".into(), password("alice@contoso.test").into());
    let envelope = Envelope::new(
        Some("alice@contoso.test".parse().unwrap()),
        vec!["scanner@contoso.test".parse().unwrap()],
    )
    .unwrap();
    let modes = [
        (t.starttls_addr().port(), Tls::Required(params.clone())),
        (t.implicit_addr().port(), Tls::Wrapper(params)),
    ];
    let mut sent = Vec::new();
    for (i, (port, tls)) in modes.into_iter().enumerate() {
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("localhost")
            .port(port)
            .tls(tls)
            .credentials(creds.clone())
            .build();
        let msg = message(&format!("lettre-{i}"));
        // lettre, like swaks, always writes CRLF before the final ".": hand it the
        // message without its last CRLF.
        let resp = mailer.send_raw(&envelope, &msg[..msg.len() - 2]).await.expect("lettre send");
        assert!(resp.is_positive());
        sent.push(msg);
    }
    let files = t.wait_for_mail("scanner@contoso.test", 2).await;
    let mut bodies: Vec<Vec<u8>> = files.iter().map(|f| split_received(f).1).collect();
    bodies.sort();
    sent.sort();
    assert_eq!(bodies, sent);
}

/// One message to two local users in two tenants and one remote recipient, with no smart
/// host configured: the remote recipient is refused at RCPT (550 5.7.1, reported by
/// smtplib), the local copies are delivered and nothing stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_recipients_and_refused_remote_one() {
    let t = TestServer::start().await;
    let (file, sent) = write_message(&t, "multi");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtplib_send.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["starttls", "localhost", &t.starttls_addr().port().to_string()])
        .arg(&t.cert_path)
        .args(["alice@contoso.test", password("alice@contoso.test"), "alice@contoso.test"])
        .arg("scanner@contoso.test,bob@fabrikam.test,someone@example.org")
        .arg(&file)
        .output()
        .await
        .unwrap();
    check(&out, "smtplib to three recipients");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("'someone@example.org': (550, b'5.7.1 Recipient <someone@example.org> refused: this gateway delivers only to its own domains"),
        "smtplib reports the refused remote recipient: {stdout}"
    );
    for rcpt in ["scanner@contoso.test", "bob@fabrikam.test"] {
        let files = t.wait_for_mail(rcpt, 1).await;
        let (received, body) = split_received(&files[0]);
        assert_eq!(body, sent);
        assert!(!received.contains("for <"), "no 'for' clause with several recipients: {received}");
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !t.server().spool.queued_ids().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the delivered message leaves the queue");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
