//! The queue manager end to end: a relaying Mailgate and a second Mailgate as its smart
//! host (STARTTLS, a verified certificate, AUTH), on a clock the test moves. Retries follow
//! the backoff schedule, a 5xx earns the sender a DSN, a bad certificate keeps the message
//! queued with its reason in `mailgate queue show`, and the queue commands act on a
//! running server.

mod common;

use common::{password, run, Raw, TestClock, TestServer};
use mailgate::queue::ops;
use mailgate::queue::state::Backoff;
use std::path::Path;
use std::time::Duration;

const BACKOFF: Backoff = Backoff { min: 300, max: 3600 };

/// A port that was free a moment ago, for an upstream that goes down and comes back on it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The upstream: a Mailgate whose STARTTLS endpoint listens on `port`, with the extra
/// domain remote.test (tenant fabrikam) and its user carol.
async fn upstream(port: u16) -> TestServer {
    let endpoints = format!(
        "[[endpoint]]\nname = \"standard-starttls\"\nlisten = [\"127.0.0.1:{port}\"]\ntls_mode = \"starttls\"\n\
         [[endpoint]]\nname = \"standard-implicit\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"implicit\"\n"
    );
    let up = TestServer::start_custom(&endpoints, &["alice@contoso.test"], None).await;
    let d = &up.server().directory;
    d.add_domain("remote.test", "fabrikam").await.unwrap();
    d.add_user("carol@remote.test", "carol-password-1", true).await.unwrap();
    up
}

/// The relay: Mailgate with `up` (at 127.0.0.1:`port`) as its smart host, authenticating
/// as alice@contoso.test (the upstream, like Exchange Online, lets a user send only as
/// itself); `ca` is the CA file to trust (None: the system roots).
async fn relay(port: u16, ca: Option<&Path>, clock: &TestClock, extra: &str) -> TestServer {
    let secrets = tempfile::tempdir().unwrap().keep();
    let pw = secrets.join("upstream.pass");
    std::fs::write(&pw, format!("{}\n", password("alice@contoso.test"))).unwrap();
    let ca = ca.map(|c| format!("ca_file = \"{}\"\n", c.display())).unwrap_or_default();
    let config = format!(
        "{}\n[queue]\nretry_interval = 3600\n[delivery]\nsmarthost = \"up\"\n\
         [[smarthost]]\nname = \"up\"\naddress = \"127.0.0.1:{port}\"\ntls = \"starttls\"\n{ca}\
         username = \"alice@contoso.test\"\npassword_file = \"{}\"\nconnect_timeout = 5\ncommand_timeout = 10\n{extra}",
        common::STANDARD_ENDPOINTS,
        pw.display()
    );
    TestServer::start_custom(&config, &["alice@contoso.test"], Some(clock.clock())).await
}

/// A relay and its running upstream (STARTTLS, verified certificate, AUTH), with `extra`
/// TOML for the relay.
async fn relay_and_upstream(clock: &TestClock, extra: &str) -> (TestServer, TestServer) {
    let port = free_port();
    let up = upstream(port).await;
    let t = relay(port, Some(&up.cert_path), clock, extra).await;
    (t, up)
}

/// As [`relay_and_upstream`], with the upstream down (stopped: its certificate and port
/// stay; `up.restart(None)` brings it back on the same port).
async fn relay_to_a_stopped_upstream(clock: &TestClock) -> (TestServer, TestServer) {
    let (t, mut up) = relay_and_upstream(clock, "").await;
    up.stop().await;
    (t, up)
}

/// Submits one message as alice; returns its queue id.
async fn submit(t: &TestServer, to: &str, subject: &str) -> String {
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, "alice@contoso.test").await;
    r.expect("MAIL FROM:<alice@contoso.test>", 250).await;
    r.expect(&format!("RCPT TO:<{to}>"), 250).await;
    r.expect("DATA", 354).await;
    let msg = format!(
        "From: Alice <alice@contoso.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@contoso.test>\r\n\r\nScan attached.\r\n..leading dot line (dot-stuffed on the wire)\r\n.\r\n"
    );
    r.send(msg.as_bytes()).await;
    let (code, text) = r.reply().await;
    assert_eq!(code, 250, "{text}");
    text.rsplit(' ').next().unwrap().trim().to_string()
}

/// Asks the server to deliver what is due and waits for those attempts.
async fn scan(t: &TestServer) {
    let socket = t.server().config.control_socket();
    assert!(ops::request_scan(&socket, Duration::from_secs(60)).await.unwrap(), "the server answers on its control socket");
}

async fn show(t: &TestServer, id: &str) -> Option<ops::EntryView> {
    match ops::show(&t.server().spool, BACKOFF, id).await {
        Ok(v) => Some(v),
        Err(ops::OpError::NotFound(_)) => None,
        Err(e) => panic!("queue show {id}: {e}"),
    }
}

fn cli(t: &TestServer, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailgate"));
    cmd.arg("--config").arg(t.config_path()).args(args);
    cmd
}

/// Runs a command that must succeed; returns its output.
async fn ok(cmd: tokio::process::Command, what: &str) -> std::process::Output {
    let out = run(cmd, what).await;
    assert!(out.status.success(), "{what}: {}", common::show(&out));
    out
}

fn body_of(file: &[u8]) -> String {
    String::from_utf8_lossy(file).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_backoff_until_the_upstream_returns() {
    let clock = TestClock::at("2027-01-10");
    let (t, up) = relay_to_a_stopped_upstream(&clock).await;
    let port = t.server().config.smarthosts[0].port;
    let t0 = clock.now().timestamp();
    let id = submit(&t, "carol@remote.test", "retry").await;
    scan(&t).await;
    let v = show(&t, &id).await.expect("queued");
    let r = &v.recipients[0];
    assert_eq!((r.status, r.attempts), ("pending", 1), "{v:?}");
    let reason = r.last_error.as_ref().unwrap().to_string();
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "the reason names the upstream: {reason}");
    assert_eq!(v.next_attempt, Some(t0 + 300), "first retry after backoff_min");

    // The CLI shows the same, as JSON, from another process.
    let out = ok(cli(&t, &["queue", "show", &id, "--format", "json"]), "queue show").await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["recipients"][0]["attempts"], 1);
    assert_eq!(json["recipients"][0]["last_error"]["kind"], "temporary");

    clock.advance(299);
    scan(&t).await;
    assert_eq!(show(&t, &id).await.unwrap().recipients[0].attempts, 1, "not before the backoff has passed");
    clock.advance(2);
    scan(&t).await;
    let v = show(&t, &id).await.unwrap();
    assert_eq!(v.recipients[0].attempts, 2);
    assert_eq!(v.next_attempt, Some(t0 + 301 + 600), "the backoff doubles");

    let up = up.restart(None).await; // back on the same port
    clock.advance(599);
    scan(&t).await;
    assert_eq!(show(&t, &id).await.unwrap().recipients[0].attempts, 2);
    clock.advance(1);
    scan(&t).await;
    assert!(show(&t, &id).await.is_none(), "delivered and removed from the queue");
    let got = up.wait_for_mail("carol@remote.test", 1).await;
    let text = body_of(&got[0]);
    assert!(text.contains("Subject: retry\r\n") && text.contains("\r\n.leading dot line (dot-stuffed on the wire)\r\n"), "{text}");
    assert!(text.contains("(authenticated sender: alice@contoso.test)"), "the upstream authenticated the relay: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_returns_a_dsn_to_the_sender() {
    let clock = TestClock::at("2027-01-10");
    let (t, _up) = relay_and_upstream(&clock, "").await;
    let id = submit(&t, "nobody@remote.test", "doomed").await;
    let dsn = t.wait_for_mail("alice@contoso.test", 1).await;
    let text = body_of(&dsn[0]);
    for needle in [
        "Content-Type: multipart/report",
        "report-type=delivery-status",
        "Final-Recipient: rfc822; nobody@remote.test",
        "Action: failed",
        "Status: 5.1.1",
        "550 5.1.1",
        "Subject: doomed",
        "Auto-Submitted: auto-replied",
    ] {
        assert!(text.contains(needle), "DSN lacks {needle:?}:\n{text}");
    }
    scan(&t).await;
    assert!(show(&t, &id).await.is_none(), "the bounced message left the queue");
    assert!(t.server().spool.queued_ids().unwrap().is_empty(), "the DSN was delivered too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_keeps_the_message_queued_and_says_why() {
    let port = free_port();
    let up = upstream(port).await;
    let clock = TestClock::at("2027-01-10");
    let t = relay(port, None, &clock, "").await; // system roots: the upstream's self-signed cert fails
    let id = submit(&t, "carol@remote.test", "untrusted").await;
    scan(&t).await;
    let out = ok(cli(&t, &["queue", "show", &id]), "queue show").await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("pending") && text.to_lowercase().contains("certificate"), "queue show names the reason:\n{text}");
    assert!(up.mailbox("carol@remote.test").is_empty(), "nothing delivered");
    assert!(up.server().spool.queued_ids().unwrap().is_empty(), "nothing reached the upstream's queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_act_on_a_running_server() {
    let clock = TestClock::at("2027-01-10");
    let (t, _up) = relay_to_a_stopped_upstream(&clock).await;
    let held = submit(&t, "carol@remote.test", "held").await;
    let returned = submit(&t, "carol@remote.test", "returned").await;
    scan(&t).await;

    let out = ok(cli(&t, &["queue", "list", "--format", "json"]), "queue list").await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![held.as_str(), returned.as_str()]);
    let out = ok(cli(&t, &["queue", "list", "--tenant", "fabrikam", "--format", "json"]), "queue list --tenant").await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));

    ok(cli(&t, &["queue", "hold", &held]), "queue hold").await;
    ok(cli(&t, &["queue", "retry", "--all"]), "queue retry --all").await;
    assert_eq!(show(&t, &held).await.unwrap().recipients[0].attempts, 1, "a held message is not attempted");
    assert!(show(&t, &held).await.unwrap().held);
    assert_eq!(show(&t, &returned).await.unwrap().recipients[0].attempts, 2, "retry ignores the backoff");

    ok(cli(&t, &["queue", "bounce", &returned]), "queue bounce").await;
    let dsn = t.wait_for_mail("alice@contoso.test", 1).await;
    let text = body_of(&dsn[0]);
    assert!(text.contains("returned to the sender by the mail administrator") && text.contains("Subject: returned"), "{text}");
    assert!(show(&t, &returned).await.is_none());

    ok(cli(&t, &["queue", "release", &held]), "queue release").await;
    assert!(!show(&t, &held).await.unwrap().held);
    ok(cli(&t, &["queue", "delete", &held]), "queue delete").await;
    assert!(show(&t, &held).await.is_none());
    let out = cli(&t, &["queue", "show", &held]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no queued message"), "{}", common::show(&out));
    assert_eq!(t.mailbox("alice@contoso.test").len(), 1, "delete tells nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_warning_after_four_hours_then_expiry_after_five_days() {
    let clock = TestClock::at("2027-01-10");
    let (t, _up) = relay_to_a_stopped_upstream(&clock).await;
    let id = submit(&t, "carol@remote.test", "slow").await;
    scan(&t).await;
    clock.advance(4 * 3600);
    scan(&t).await;
    let warning = t.wait_for_mail("alice@contoso.test", 1).await;
    let text = body_of(&warning[0]);
    assert!(text.contains("Action: delayed") && text.contains("Will-Retry-Until:"), "{text}");
    assert!(show(&t, &id).await.is_some(), "still queued after the warning");
    clock.advance(5 * 86_400);
    scan(&t).await;
    let both = t.wait_for_mail("alice@contoso.test", 2).await;
    let failed = both.iter().map(|f| body_of(f)).find(|t| t.contains("Action: failed")).expect("a failure DSN");
    assert!(failed.contains("expired") && failed.contains("carol@remote.test"), "{failed}");
    assert!(show(&t, &id).await.is_none());
}

/// XOAUTH2 configured as an operator writes it (`[smarthost.oauth2]`, the client secret in
/// a file): the relay fetches a token, delivers, refreshes it after expiry on the test's
/// clock; a token the upstream rejects keeps the message queued with the reason shown by
/// `queue show`, and the next attempt fetches a new token and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_relay_fetches_refreshes_and_recovers_from_a_rejected_token() {
    use common::token_endpoint::{TokenEndpoint, EXPIRES_IN};
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let allow = |list: &[&str]| {
        std::fs::write(&tokens, list.iter().map(|t| format!("alice@contoso.test {t}\n")).collect::<String>()).unwrap()
    };
    allow(&["tok-1", "tok-2"]);
    let port = free_port();
    let up_endpoints = format!(
        "[[endpoint]]\nname = \"standard-starttls\"\nlisten = [\"127.0.0.1:{port}\"]\ntls_mode = \"starttls\"\n[smtp]\nxoauth2_tokens_file = \"{}\"\n",
        tokens.display()
    );
    let up = TestServer::start_custom(&up_endpoints, &["alice@contoso.test"], None).await;
    up.server().directory.add_domain("remote.test", "fabrikam").await.unwrap();
    up.server().directory.add_user("carol@remote.test", "carol-password-1", true).await.unwrap();
    let endpoint = TokenEndpoint::start().await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "app-secret\n").unwrap();
    let clock = TestClock::at("2027-01-10");
    let config = format!(
        "{}\n[queue]\nretry_interval = 3600\n[delivery]\nsmarthost = \"o365\"\n\
         [[smarthost]]\nname = \"o365\"\naddress = \"127.0.0.1:{port}\"\nca_file = \"{}\"\nusername = \"alice@contoso.test\"\n\
         [smarthost.oauth2]\ntoken_url = \"{}\"\nclient_id = \"mailgate\"\nclient_secret_file = \"{}\"\nscope = \"https://outlook.office365.com/.default\"\n",
        common::STANDARD_ENDPOINTS,
        up.cert_path.display(),
        endpoint.url,
        secret.display()
    );
    let t = TestServer::start_custom(&config, &["alice@contoso.test"], Some(clock.clock())).await;

    submit(&t, "carol@remote.test", "oauth-1").await;
    up.wait_for_mail("carol@remote.test", 1).await;
    assert_eq!(endpoint.requests(), 1);
    clock.advance(EXPIRES_IN);
    submit(&t, "carol@remote.test", "oauth-2").await;
    up.wait_for_mail("carol@remote.test", 2).await;
    assert_eq!(endpoint.requests(), 2, "the expired token was refreshed once");

    endpoint.revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    clock.advance(EXPIRES_IN);
    let id = submit(&t, "carol@remote.test", "oauth-3").await;
    scan(&t).await;
    let out = ok(cli(&t, &["queue", "show", &id]), "queue show").await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("rejected the OAuth2 token: 535 5.7.8") && text.contains("a new token will be fetched"), "{text}");
    assert!(!text.contains("revoked-"), "the token itself is never shown: {text}");

    endpoint.revoked.store(false, std::sync::atomic::Ordering::SeqCst);
    allow(&["tok-1", "tok-2", "tok-4"]);
    clock.advance(300);
    scan(&t).await;
    assert!(show(&t, &id).await.is_none(), "delivered with a fresh token at the next attempt");
    let got = up.wait_for_mail("carol@remote.test", 3).await;
    assert!(got.iter().any(|m| body_of(m).contains("Subject: oauth-3")));
    assert_eq!(endpoint.requests(), 4);
}

/// Graceful shutdown with a delivery in flight to an upstream that never answers: the
/// server stops within `shutdown_grace`, the delivery is cancelled before anything was
/// committed, and the message is still queued (not counted as an attempt) for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_defers_a_delivery_in_flight() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            let _ = accepted_tx.send(s); // connected, never greeted
        }
    });
    let clock = TestClock::at("2027-01-10");
    let mut t = relay(port, None, &clock, "").await;
    // A shorter grace than the smart host's timeouts (connect 5 s, command 10 s).
    let config = std::fs::read_to_string(t.config_path()).unwrap().replace("retry_interval = 3600", "retry_interval = 3600\nshutdown_grace = 1");
    std::fs::write(t.config_path(), config).unwrap();
    t.stop().await;
    let mut t = t.restart(Some(clock.clock())).await;
    let id = submit(&t, "carol@remote.test", "inflight").await;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), accepted.recv()).await.expect("the relay connects to the upstream").unwrap();
    let started = tokio::time::Instant::now();
    t.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    // The cancelled delivery closed its connection (it did not linger until its 10 s timeout).
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), tokio::io::AsyncReadExt::read(&mut conn, &mut buf))
        .await
        .expect("the relay dropped the upstream connection at shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing was sent to an upstream that never greeted");
    let spool = mailgate::queue::Spool::attach(&t.data_dir().join("spool")).unwrap();
    let v = ops::show(&spool, BACKOFF, &id).await.expect("still queued after shutdown");
    assert_eq!((v.recipients[0].status, v.recipients[0].attempts), ("pending", 0), "{v:?}");
}

/// `delivery.destination_concurrency` bounds the connections to one smart host: four
/// messages to an upstream that never greets (each attempt times out after 1 s) never have
/// more than two connections open at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_destination_are_limited() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let max = Arc::new(AtomicUsize::new(0));
    let m = max.clone();
    tokio::spawn(async move {
        // At each accept, the connections still open: those whose client has closed read
        // EOF at once (Mailgate closes a connection before it frees the slot, and on
        // loopback the FIN has arrived by then), so a late EOF never counts twice.
        let mut open: Vec<tokio::net::TcpStream> = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            let mut buf = [0u8; 64];
            open.retain(|c| loop {
                match c.try_read(&mut buf) {
                    Ok(0) => break false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                    Err(_) => break false,
                }
            });
            open.push(s);
            m.fetch_max(open.len(), Ordering::SeqCst);
        }
    });
    let clock = TestClock::at("2027-01-10");
    let t = relay(port, None, &clock, "").await;
    let config = std::fs::read_to_string(t.config_path()).unwrap();
    let config = config.replace("command_timeout = 10", "command_timeout = 1").replace("smarthost = \"up\"", "smarthost = \"up\"\ndestination_concurrency = 2");
    let mut t = t;
    std::fs::write(t.config_path(), config).unwrap();
    t.stop().await;
    let t = t.restart(Some(clock.clock())).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit(&t, "carol@remote.test", &format!("limit{i}")).await);
    }
    scan(&t).await; // waits for the four attempts
    for id in &ids {
        assert_eq!(show(&t, id).await.unwrap().recipients[0].attempts, 1);
    }
    assert_eq!(max.load(Ordering::SeqCst), 2, "at most two connections at once, and two were used");
}

/// Never a bounce to the null sender (RFC 5321 §4.5.5), so never a bounce loop: a message
/// from `<>` (as a DSN is) that fails permanently is dropped with a log line, no new DSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_from_the_null_sender_is_not_bounced() {
    use mailgate::queue::{Envelope, Recipient, RecipientRoute};
    let clock = TestClock::at("2027-01-10");
    let (t, _up) = relay_and_upstream(&clock, "").await;
    let spool = &t.server().spool;
    let env = Envelope {
        id: spool.new_id(),
        received_at: clock.now().timestamp(),
        sender: String::new(),
        recipients: vec![Recipient { address: "nobody@remote.test".into(), route: RecipientRoute::Relay }],
        auth_user: String::new(),
        tenant: "contoso".into(),
        client_ip: String::new(),
        endpoint: "dsn".into(),
    };
    let mut w = spool.create(&env, b"").await.unwrap();
    w.write(b"From: MAILER-DAEMON@mx.test\r\nSubject: a DSN\r\n\r\nbody\r\n").await.unwrap();
    let id = w.commit().await.unwrap();
    scan(&t).await;
    assert!(show(&t, &id).await.is_none(), "the failed entry left the queue");
    assert!(spool.queued_ids().unwrap().is_empty(), "and no DSN about it was queued");
    assert!(t.all_mail_files().is_empty(), "nothing delivered anywhere");
}

/// A tenant whose mailboxes live upstream (`local = "smarthost"`, the Exchange Online
/// deployment): an address of its own domain that Mailgate's directory does not know is
/// accepted and relayed, and arrives in the upstream's mailbox; one the upstream does not
/// know comes back to the sender as a DSN (through the same smart host: the sender's
/// mailbox lives upstream too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_mailboxes_upstream_relays_its_own_domain() {
    let clock = TestClock::at("2027-01-10");
    let (t, up) = relay_and_upstream(&clock, "[[delivery.tenant]]\nname = \"contoso\"\nlocal = \"smarthost\"\n").await;
    up.server().directory.add_user("carol@contoso.test", "carol-password-1", true).await.unwrap();
    assert!(t.server().directory.user("carol@contoso.test").await.unwrap().is_none(), "carol is not a Mailgate user");
    submit(&t, "carol@contoso.test", "upstream-mailbox").await;
    let got = up.wait_for_mail("carol@contoso.test", 1).await;
    assert!(body_of(&got[0]).contains("Subject: upstream-mailbox"));
    submit(&t, "nobody@contoso.test", "no-such-mailbox").await;
    let dsn = up.wait_for_mail("alice@contoso.test", 1).await;
    let text = body_of(&dsn[0]);
    assert!(text.contains("Final-Recipient: rfc822; nobody@contoso.test") && text.contains("550 5.1.1"), "{text}");
    assert!(t.mailbox("alice@contoso.test").is_empty() && t.mailbox("carol@contoso.test").is_empty(), "nothing stored locally");
}
