//! Limits on clients, driven by real clients: failed-AUTH limits and bans (`[auth_limits]`,
//! `mailgate ban`: Python's smtplib guessing from several 127.0.0.x addresses, swaks, the CLI
//! binary), connections per address and subnet, talking before the greeting, and message
//! content trickled below `[limits] min_data_rate`.

mod common;

use common::{password, TestServer};
use std::path::Path;
use tokio::process::Command;

const LIMITS: &str = r#"
[auth_limits]
address_per_minute = 3
subnet_per_minute = 100
login_per_minute = 4
ban_time = 600
tarpit = 1
exempt = ["127.0.0.9"]
"#;

/// One AUTH PLAIN from `source` with smtplib: the reply as `CODE TEXT`.
async fn attempt(t: &TestServer, source: &str, login: &str, pw: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/auth_attempt.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &t.starttls_addr().port().to_string()])
        .arg(&t.cert_path)
        .args([source, login, pw])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const BAD: &str = "535 5.7.8 Authentication credentials invalid";
const ADDRESS_BAN: &str = "421 4.7.0 Too many failed authentications from your address; try again later (in 10 minutes)";
const LOGIN_BAN: &str = "421 4.7.0 Too many failed authentications for this login; try again later (in 10 minutes)";
const OK: &str = "235 2.7.0 Authentication successful";

async fn mailgate(t: &TestServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate")).arg("--config").arg(t.config_path()).args(args).output().await.unwrap();
    assert!(out.status.success(), "mailgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_from_one_address_bans_it_even_for_the_right_password_and_not_others() {
    let mut t = TestServer::start_with(LIMITS).await;
    let alice = "alice@contoso.test";
    assert_eq!(attempt(&t, "127.0.0.2", alice, "guess-1").await, BAD);
    assert_eq!(attempt(&t, "127.0.0.2", alice, "guess-2").await, BAD);
    assert_eq!(attempt(&t, "127.0.0.2", alice, "guess-3").await, ADDRESS_BAN, "the third failure within a minute");
    assert_eq!(attempt(&t, "127.0.0.2", alice, password(alice)).await, ADDRESS_BAN, "the right password during the ban");
    assert_eq!(attempt(&t, "127.0.0.2", "scanner@contoso.test", password("scanner@contoso.test")).await, ADDRESS_BAN);
    assert_eq!(attempt(&t, "127.0.0.3", alice, password(alice)).await, OK, "another address is unaffected");

    // The allow-listed address is never counted nor banned.
    for i in 0..6 {
        assert_eq!(attempt(&t, "127.0.0.9", "bob@fabrikam.test", &format!("wrong-{i}")).await, BAD);
    }
    assert_eq!(attempt(&t, "127.0.0.9", "bob@fabrikam.test", password("bob@fabrikam.test")).await, OK);
    let metrics = t.server().metrics().render();
    assert!(metrics.contains("mailgate_auth_bans_total{kind=\"address\"} 1"), "{metrics}");
    assert!(metrics.contains("mailgate_auth_total{result=\"banned\"} 2"), "{metrics}");

    // The ban is in the directory: listed by the CLI, kept over a restart, lifted by hand.
    let list = mailgate(&t, &["ban", "list"]).await;
    assert!(list.contains("127.0.0.2/32") && list.contains("auth-limits"), "{list}");
    t.stop().await;
    let t = t.restart(None).await;
    assert_eq!(attempt(&t, "127.0.0.2", alice, password(alice)).await, ADDRESS_BAN, "the ban survives a restart");
    let removed = mailgate(&t, &["ban", "remove", "--address", "127.0.0.2"]).await;
    assert!(removed.contains("lifted"), "{removed}");
    assert_eq!(attempt(&t, "127.0.0.2", alice, password(alice)).await, OK, "lifted at once on the running server");
    let audit = mailgate(&t, &["audit", "list", "--format", "csv"]).await;
    assert!(audit.contains(",auth-limits,operator,,ban.add,127.0.0.2/32,") && audit.contains("ban.remove,127.0.0.2/32"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_guessed_from_several_addresses_is_banned_everywhere() {
    let t = TestServer::start_with(LIMITS).await;
    let printer = "printer@fabrikam.test";
    for source in ["127.0.0.10", "127.0.0.11", "127.0.0.12"] {
        assert_eq!(attempt(&t, source, printer, "guess").await, BAD, "one guess from {source}");
    }
    assert_eq!(attempt(&t, "127.0.0.13", printer, "guess").await, LOGIN_BAN, "the fourth guess of the login");
    // swaks from yet another address, with the right password: refused for the ban's time.
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &t.starttls_addr().port().to_string(), "--local-interface", "127.0.0.14"])
        .args(["--tls", "--auth", "PLAIN", "--auth-user", printer, "--auth-password", password(printer)])
        .args(["--from", printer, "--to", printer, "--quit-after", "AUTH"])
        .output()
        .await
        .expect("swaks must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("<~* {LOGIN_BAN}")), "{text}");
    // Other logins from those addresses are served.
    assert_eq!(attempt(&t, "127.0.0.14", "bob@fabrikam.test", password("bob@fabrikam.test")).await, OK);
    // An operator ban by hand, then the API-less CLI JSON list shows both kinds' fields.
    mailgate(&t, &["ban", "add", "--login", "Bob@Fabrikam.test", "--for", "2h", "--reason", "stolen password"]).await;
    assert_eq!(
        attempt(&t, "127.0.0.15", "bob@fabrikam.test", password("bob@fabrikam.test")).await,
        "421 4.7.0 Too many failed authentications for this login; try again later (in 120 minutes)"
    );
    let json: serde_json::Value = serde_json::from_str(&mailgate(&t, &["ban", "list", "--format", "json"]).await).unwrap();
    let targets: Vec<(&str, &str)> = json.as_array().unwrap().iter().map(|b| (b["kind"].as_str().unwrap(), b["target"].as_str().unwrap())).collect();
    assert_eq!(targets, [("login", "bob@fabrikam.test"), ("login", "printer@fabrikam.test")]);
}

/// A connection from `source` to the STARTTLS endpoint; its first line (greeting or refusal).
async fn connect_from(t: &TestServer, source: &str) -> (tokio::io::BufReader<tokio::net::TcpStream>, String) {
    use tokio::io::AsyncBufReadExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(t.starttls_addr()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    (reader, line.trim_end().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_and_subnet_limits_refuse_with_421_and_are_counted() {
    let t = TestServer::start_custom(
        &format!("{}\n[limits]\nmax_connections_per_ip_per_minute = 3\nmax_sessions_per_subnet = 2\n", common::STANDARD_ENDPOINTS),
        &[],
        None,
    )
    .await;
    // Three connections a minute from one address, one after the other.
    for _ in 0..3 {
        let (_c, greeting) = connect_from(&t, "127.0.1.1").await;
        assert!(greeting.starts_with("220 "), "{greeting}");
    }
    let (_c, refused) = connect_from(&t, "127.0.1.1").await;
    assert_eq!(refused, "421 4.7.0 Too many connections from your address in the last minute; try again in a minute");
    let (_c, other) = connect_from(&t, "127.0.2.1").await;
    assert!(other.starts_with("220 "), "another address is served: {other}");

    // Two sessions at once from one /24, held open; the third address of it is refused.
    let (a, ga) = connect_from(&t, "127.0.3.1").await;
    let (_b, gb) = connect_from(&t, "127.0.3.2").await;
    assert!(ga.starts_with("220 ") && gb.starts_with("220 "));
    let (_c, refused) = connect_from(&t, "127.0.3.3").await;
    assert!(refused.starts_with("421 4.3.2 Too many concurrent sessions"), "{refused}");
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_c, g) = connect_from(&t, "127.0.3.4").await;
        if g.starts_with("220 ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the subnet's place is not freed: {g}");
    }
    let metrics = t.server().metrics().render();
    // The two refusals above, and any of the retries made while the freed place was noticed.
    let throttled: u64 = metrics
        .lines()
        .find(|l| l.starts_with("mailgate_sessions_total{") && l.contains("outcome=\"throttled\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(throttled >= 2, "{metrics}");
}

/// The value of the `mailgate_sessions_total` line with `outcome`, summed over endpoints.
fn sessions_with_outcome(t: &TestServer, outcome: &str) -> u64 {
    let metrics = t.server().metrics().render();
    metrics
        .lines()
        .filter(|l| l.starts_with("mailgate_sessions_total{") && l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Sends one message with Python's smtplib over STARTTLS; its output must say nothing refused.
async fn smtplib_send(t: &TestServer, file: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtplib_send.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["starttls", "localhost", &t.starttls_addr().port().to_string()])
        .arg(&t.cert_path)
        .args(["alice@contoso.test", password("alice@contoso.test"), "alice@contoso.test", "scanner@contoso.test"])
        .arg(file)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused: {}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_talks_before_the_greeting_is_refused_and_one_that_waits_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestServer::start_custom(
        &format!("{}\n[limits]\ngreet_wait = 2\nmax_connections_per_ip_per_minute = 0\n", common::STANDARD_ENDPOINTS),
        &["alice@contoso.test", "scanner@contoso.test"],
        None,
    )
    .await;
    // A bot pipelines its EHLO with the connection: inside the 2 s the greeting waits.
    let mut bot = tokio::net::TcpStream::connect(t.starttls_addr()).await.unwrap();
    bot.write_all(b"EHLO bot\r\nMAIL FROM:<x@y.test>\r\n").await.unwrap();
    let mut reply = String::new();
    bot.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "554 5.5.1 Protocol error: your client sent data before the 220 greeting; an SMTP client must wait for it (RFC 5321 section 3.1)\r\n");
    // smtplib waits for the greeting (held back 2 s) and is served.
    let file = t.dir.path().join("msg.eml");
    std::fs::write(&file, b"Subject: waits\r\n\r\nfor the greeting\r\n").unwrap();
    smtplib_send(&t, &file).await;
    assert_eq!(t.wait_for_mail("scanner@contoso.test", 1).await.len(), 1);
    assert_eq!(sessions_with_outcome(&t, "pregreet"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pregreet_allow_serves_a_client_that_talks_first() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // `pregreet = "allow"`: a device that talks first is served, its early command answered.
    let t = TestServer::start_custom(
        &format!("{}\n[limits]\ngreet_wait = 1\npregreet = \"allow\"\n", common::STANDARD_ENDPOINTS),
        &[],
        None,
    )
    .await;
    let stream = tokio::net::TcpStream::connect(t.starttls_addr()).await.unwrap();
    let mut c = tokio::io::BufReader::new(stream);
    c.get_mut().write_all(b"EHLO early\r\n").await.unwrap();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        c.read_line(&mut line).await.unwrap();
        let last = line.as_bytes().get(3) == Some(&b' ') && line.starts_with("250");
        lines.push(line);
        if last {
            break;
        }
    }
    assert!(lines[0].starts_with("220 mx.test ESMTP"), "{lines:?}");
    assert!(lines[1].starts_with("250-mx.test Hello early"), "{lines:?}");
    assert_eq!(sessions_with_outcome(&t, "pregreet"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_trickled_below_the_minimum_rate_is_cut_and_nothing_is_queued() {
    use common::Raw;
    let t = TestServer::start_custom(
        &format!("{}\n[limits]\ndata_timeout = 2\nmin_data_rate = 1000\n", common::STANDARD_ENDPOINTS),
        &["alice@contoso.test", "scanner@contoso.test"],
        None,
    )
    .await;
    // A fast client under the same limits: 300 KB in one go is well above 1000 octets a second.
    let file = t.dir.path().join("big.eml");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..5000 {
        big.extend_from_slice(format!("line {i:05} of a message that arrives quickly, as any real client sends\r\n").as_bytes());
    }
    std::fs::write(&file, &big).unwrap();
    smtplib_send(&t, &file).await;
    assert_eq!(t.wait_for_mail("scanner@contoso.test", 1).await.len(), 1);

    // A slowloris: each byte well inside the 2 s read timeout, the whole far below the rate.
    let mut c = Raw::logged_in(t.starttls_addr(), &t.cert_pem, "alice@contoso.test").await;
    assert_eq!(c.cmd("MAIL FROM:<alice@contoso.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<scanner@contoso.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    let started = std::time::Instant::now();
    let reply = loop {
        c.send_lenient(b"x").await;
        if let Some(r) = c.reply_within(std::time::Duration::from_millis(500)).await {
            break r;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "never cut");
    };
    assert_eq!(reply, (421, "421 4.4.2 mx.test message content arrived slower than 1000 octets a second; closing connection, the message was not queued\r\n".to_string()));
    assert!(c.closed().await);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "cut before data_timeout");
    assert_eq!(t.wait_for_mail("scanner@contoso.test", 1).await.len(), 1, "the trickled message must not be delivered");
    assert_eq!(sessions_with_outcome(&t, "too_slow"), 1);
}
