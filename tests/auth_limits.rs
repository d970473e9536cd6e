//! Failed-AUTH limits and bans (`[auth_limits]`, `mailgate ban`) driven by real clients:
//! Python's smtplib guessing from several 127.0.0.x addresses, swaks, and the CLI binary.

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
