//! Device quirks: what printers, scanners and old applications send, each against the
//! reply such a device expects. swaks and Python's smtplib where they speak the quirk, the
//! raw client where only firmware does (lowercase verbs, trailing spaces, an authzid).

mod common;

use base64::Engine;
use common::{password, Raw, TestServer};
use tokio::process::Command;

const ALICE: &str = "alice@contoso.test";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// AUTH LOGIN without an initial response: the client waits for the `Username:` and
/// `Password:` prompts (base64, as Xerox and HP firmware compare them), as swaks does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_with_prompts_as_swaks_sends_it() {
    let t = TestServer::start_custom(common::STANDARD_ENDPOINTS, &[ALICE], None).await;
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &t.starttls_addr().port().to_string(), "--tls"])
        .args(["--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", password(ALICE)])
        .args(["--from", ALICE, "--to", ALICE, "--ehlo", "xerox-wc7855.contoso.lan"])
        .output()
        .await
        .expect("swaks must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in ["~> AUTH LOGIN\r", "<~  334 VXNlcm5hbWU6", "<~  334 UGFzc3dvcmQ6", "<~  235 2.7.0 Authentication successful", "<~  250 2.0.0 OK queued as"] {
        assert!(text.contains(line.trim_end_matches('\r')), "swaks: no {line:?} in\n{text}");
    }
    assert_eq!(t.wait_for_mail(ALICE, 1).await.len(), 1);
}

/// AUTH LOGIN with the user name as initial response (RFC 4954 §4; Python's smtplib and
/// some HP firmware): only the `Password:` prompt follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_with_an_initial_response_as_smtplib_sends_it() {
    let t = TestServer::start_custom(common::STANDARD_ENDPOINTS, &[ALICE], None).await;
    let script = format!(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="hp-mfp.contoso.lan", timeout=30)
s.starttls(context=ctx)
s.ehlo()
s.user, s.password = "{ALICE}", "{pw}"
s.set_debuglevel(1)
print(s.auth("LOGIN", s.auth_login, initial_response_ok=True))
s.quit()
"#,
        pw = password(ALICE)
    );
    let out = Command::new("python3")
        .args(["-c", &script, &t.starttls_addr().port().to_string()])
        .arg(&t.cert_path)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("(235, b'2.7.0 Authentication successful')"), "{stdout}");
    // smtplib's debug output: one command with the user name, one prompt, the password.
    assert!(stderr.contains(&format!("AUTH LOGIN {}", b64(ALICE))), "{stderr}");
    assert!(stderr.contains("334 UGFzc3dvcmQ6") && !stderr.contains("VXNlcm5hbWU6"), "{stderr}");
}

/// Lowercase verbs, a trailing space after commands (RFC 5321 §2.4: verbs are
/// case-insensitive), and AUTH PLAIN with an authorization identity equal to the login.
#[tokio::test]
async fn lowercase_commands_trailing_spaces_and_an_authzid() {
    let t = TestServer::start_custom(common::STANDARD_ENDPOINTS, &[ALICE], None).await;
    let mut r = Raw::plain(t.starttls_addr(), &t.cert_pem).await;
    r.expect("ehlo scanner.contoso.lan ", 250).await;
    r.expect("starttls ", 220).await;
    r.upgrade().await;
    let ehlo = r.expect("ehlo scanner.contoso.lan", 250).await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    // authzid NUL authcid NUL password, the authzid being the login (RFC 4616 §2).
    let with_authzid = base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}\0{ALICE}\0{}", password(ALICE)));
    assert_eq!(r.expect(&format!("auth plain {with_authzid}"), 235).await, "235 2.7.0 Authentication successful\r\n");
    r.expect(&format!("mail from:<{ALICE}> "), 250).await;
    r.expect(&format!("rcpt to:<{ALICE}> "), 250).await;
    r.expect("data ", 354).await;
    r.expect("Subject: quirks\r\n\r\nscan attached\r\n.", 250).await;
    r.expect("noop ", 250).await;
    r.expect("quit ", 221).await;
    assert_eq!(t.wait_for_mail(ALICE, 1).await.len(), 1);

    // Another identity as authzid (send-as at AUTH) is refused like a wrong password.
    let mut r = Raw::starttls(t.starttls_addr(), &t.cert_pem).await;
    let other = base64::engine::general_purpose::STANDARD.encode(format!("boss@contoso.test\0{ALICE}\0{}", password(ALICE)));
    assert_eq!(r.expect(&format!("AUTH PLAIN {other}"), 535).await, "535 5.7.8 Authentication credentials invalid\r\n");
    // AUTH PLAIN with the credentials on the next line, after an empty 334 (RFC 4954 §4).
    assert_eq!(r.expect("AUTH PLAIN", 334).await, "334 \r\n");
    r.expect(&b64(&format!("\0{ALICE}\0{}", password(ALICE))), 235).await;
}
