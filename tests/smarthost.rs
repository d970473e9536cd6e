//! The smart-host target against real servers on 127.0.0.1: the upstream is a second
//! Mailgate (the message must arrive in its Maildir, byte-exact), or, where a misbehaving
//! upstream is needed, a small plain-TCP SMTP server or an HTTP token endpoint written here.
//! Nothing is mocked inside the client.

mod common;

use common::token_endpoint::{TokenEndpoint, EXPIRES_IN};
use common::{password, split_received, TestServer, STANDARD_ENDPOINTS};
use mailgate::config::delivery::{OAuth2, OAuth2Grant, Secret, Smarthost, SmarthostAuth, SmarthostTls};
use mailgate::delivery::smarthost::SmarthostTarget;
use mailgate::delivery::{Failure, MessageInfo, Target};
use mailgate::session::Clock;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SENDER: &str = "alice@contoso.test";
const RCPT: &str = "scanner@contoso.test";
const HELO: &str = "relay.test";

/// CRLF endings, dot-led lines (dot-stuffing must round-trip) and 8-bit text.
fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: {SENDER}\r\nTo: {RCPT}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@relay.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello from {tag}.\r\n.leading dot line\r\n..two dots\r\n.\r\nGr\u{fc}\u{df}e\r\n"
    )
    .into_bytes()
}

fn smarthost(addr: SocketAddr, tls: SmarthostTls, auth: SmarthostAuth) -> Smarthost {
    Smarthost {
        name: "up".into(),
        host: addr.ip().to_string(),
        port: addr.port(),
        tls,
        ca_file: None,
        pin_sha256: None,
        auth,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(20),
    }
}

/// AUTH PLAIN/LOGIN as `user`, the password in a file in `dir`.
fn password_auth(dir: &Path, user: &str, pw: &str) -> SmarthostAuth {
    let file = dir.join(format!("{user}.password"));
    std::fs::write(&file, format!("{pw}\n")).unwrap();
    SmarthostAuth::Password { username: user.into(), password: Secret::File(file) }
}

/// A clock the test moves by seconds.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<chrono::DateTime<chrono::Utc>>>);

impl ManualClock {
    fn new() -> ManualClock {
        ManualClock(Arc::new(Mutex::new("2027-06-30T12:00:00Z".parse().unwrap())))
    }
    fn advance(&self, seconds: i64) {
        *self.0.lock().unwrap() += chrono::Duration::seconds(seconds);
    }
    fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

fn target(config: &Smarthost) -> SmarthostTarget {
    SmarthostTarget::new(config, HELO, mailgate::session::system_clock())
}

/// One message from alice to scanner through `target`; the content sent, or the failure.
async fn deliver(target: &SmarthostTarget, tag: &str) -> Result<Vec<u8>, Failure> {
    let content = message(tag);
    let info = MessageInfo { queue_id: tag.into(), sender: SENDER.into(), size: content.len() as u64 };
    let mut tx = target.begin(&info).await?;
    tx.rcpt(RCPT).await?;
    let mut reader: &[u8] = &content;
    tx.body(&mut reader).await?;
    let results = tx.commit().await;
    assert_eq!(results.len(), 1, "one result per accepted recipient");
    results.into_iter().next().unwrap()?;
    Ok(content)
}

/// The `n`th message in the upstream's mailbox is exactly `sent`, received over TLS from
/// an authenticated alice.
async fn assert_arrived(upstream: &TestServer, n: usize, sent: &[u8]) {
    let files = upstream.wait_for_mail(RCPT, n).await;
    assert_eq!(files.len(), n);
    let tag = String::from_utf8_lossy(sent).lines().find_map(|l| l.strip_prefix("Subject: ").map(String::from)).unwrap();
    let file = files
        .iter()
        .find(|f| String::from_utf8_lossy(f).contains(&format!("Subject: {tag}\r\n")))
        .unwrap_or_else(|| panic!("{tag} is not in the mailbox"));
    let (received, body) = split_received(file);
    assert_eq!(body, sent, "content must arrive byte-exact");
    assert!(received.contains("(authenticated sender: alice@contoso.test)"), "{received}");
    assert!(received.contains("with ESMTPSA id "), "{received}");
    assert!(received.starts_with("Received: from relay.test ("), "{received}");
    assert!(received.contains("(using TLSv1.3 with cipher "), "{received}");
}

fn assert_temporary(f: &Failure, needle: &str) {
    assert!(!f.is_permanent(), "must be temporary: {f:?}");
    assert!(f.reason.contains(needle), "{:?} should contain {needle:?}", f.reason);
}

fn sha256_of_pem(pem: &str) -> [u8; 32] {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap();
    Sha256::digest(der.as_ref()).into()
}

// ---- (a), (b), (f): password over STARTTLS and implicit TLS --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_ca_file_and_auth_plain_delivers_intact() {
    let upstream = TestServer::start_custom(STANDARD_ENDPOINTS, &[SENDER, RCPT], None).await;
    let mut config = smarthost(upstream.starttls_addr(), SmarthostTls::Starttls, password_auth(upstream.dir.path(), SENDER, password(SENDER)));
    config.ca_file = Some(upstream.cert_path.clone());
    let relay = target(&config);
    assert_eq!(relay.destination(), "smarthost:up");
    let sent = deliver(&relay, "starttls-plain").await.unwrap();
    assert_arrived(&upstream, 1, &sent).await;
    // The same target opens a new connection for the next message.
    let sent = deliver(&relay, "starttls-plain-2").await.unwrap();
    assert_arrived(&upstream, 2, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_delivers() {
    let upstream = TestServer::start_custom(STANDARD_ENDPOINTS, &[SENDER, RCPT], None).await;
    let mut config = smarthost(upstream.implicit_addr(), SmarthostTls::Implicit, password_auth(upstream.dir.path(), SENDER, password(SENDER)));
    config.ca_file = Some(upstream.cert_path.clone());
    let sent = deliver(&target(&config), "implicit").await.unwrap();
    assert_arrived(&upstream, 1, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_temporary_failure() {
    let upstream = TestServer::start_custom(STANDARD_ENDPOINTS, &[SENDER, RCPT], None).await;
    let mut config = smarthost(upstream.starttls_addr(), SmarthostTls::Starttls, password_auth(upstream.dir.path(), SENDER, "not-the-password"));
    config.ca_file = Some(upstream.cert_path.clone());
    let f = deliver(&target(&config), "wrong-password").await.unwrap_err();
    let addr = upstream.starttls_addr();
    assert_temporary(&f, &format!("smarthost up ({addr}) refused the login as alice@contoso.test: 535 5.7.8 Authentication credentials invalid"));
    assert_temporary(&f, "check the password in file ");
    assert!(!f.reason.contains("not-the-password"), "the password is never shown: {}", f.reason);
    // A password file that cannot be read is temporary too, and names the file.
    config.auth = SmarthostAuth::Password { username: SENDER.into(), password: Secret::File(upstream.dir.path().join("missing")) };
    let f = deliver(&target(&config), "missing-password").await.unwrap_err();
    assert_temporary(&f, "cannot read secret file");
    assert!(upstream.mailbox(RCPT).is_empty());
}

// ---- (c): certificate verification ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_and_wrong_pin_fail_the_right_pin_delivers() {
    let upstream = TestServer::start_custom(STANDARD_ENDPOINTS, &[SENDER, RCPT], None).await;
    let addr = upstream.starttls_addr();
    let auth = password_auth(upstream.dir.path(), SENDER, password(SENDER));

    // No ca_file: the system roots do not know the self-signed certificate.
    let config = smarthost(addr, SmarthostTls::Starttls, auth.clone());
    let f = deliver(&target(&config), "untrusted").await.unwrap_err();
    assert_temporary(&f, &format!("smarthost up: certificate verification failed for {addr}: UnknownIssuer"));
    // The same over implicit TLS.
    let config = smarthost(upstream.implicit_addr(), SmarthostTls::Implicit, auth.clone());
    let f = deliver(&target(&config), "untrusted-implicit").await.unwrap_err();
    assert_temporary(&f, "certificate verification failed for ");

    // A ca_file that is not the upstream's certificate.
    let (other_cert, _) = mailgate::tls::self_signed_rsa(&["localhost", "127.0.0.1"], 30).unwrap();
    let other_path = upstream.dir.path().join("other.pem");
    std::fs::write(&other_path, &other_cert).unwrap();
    let mut config = smarthost(addr, SmarthostTls::Starttls, auth.clone());
    config.ca_file = Some(other_path.clone());
    let f = deliver(&target(&config), "other-ca").await.unwrap_err();
    // Both certificates name the same subject: the issuer is found, its signature fails.
    assert_temporary(&f, &format!("certificate verification failed for {addr}: BadSignature"));
    assert_temporary(&f, &format!("with the CA of that name in ca_file {}", other_path.display()));

    // The pin of another certificate.
    let mut config = smarthost(addr, SmarthostTls::Starttls, auth.clone());
    config.pin_sha256 = Some(sha256_of_pem(&other_cert));
    let f = deliver(&target(&config), "wrong-pin").await.unwrap_err();
    assert_temporary(&f, "not the pinned one (pin_sha256)");
    assert!(upstream.mailbox(RCPT).is_empty(), "nothing delivered");

    // The right pin: no CA needed.
    config.pin_sha256 = Some(sha256_of_pem(&upstream.cert_pem));
    let sent = deliver(&target(&config), "right-pin").await.unwrap();
    assert_arrived(&upstream, 1, &sent).await;
}

/// An implicit-TLS server (OpenSSL) that speaks TLS 1.0 and 1.1 only, for one handshake.
async fn tls11_only_server() -> SocketAddr {
    use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslOptions, SslVersion};
    let (cert, key) = mailgate::tls::self_signed_rsa(&["localhost", "127.0.0.1"], 30).unwrap();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
    b.set_max_proto_version(Some(SslVersion::TLS1_1)).unwrap();
    b.set_cipher_list("ECDHE-RSA-AES128-SHA:AES128-SHA:@SECLEVEL=0").unwrap();
    b.set_security_level(0);
    b.set_certificate(&openssl::x509::X509::from_pem(cert.as_bytes()).unwrap()).unwrap();
    b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(key.as_bytes()).unwrap()).unwrap();
    let acceptor = b.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_openssl::SslStream::new(Ssl::new(acceptor.context()).unwrap(), tcp).unwrap();
        let accepted = std::pin::Pin::new(&mut tls).accept().await;
        assert!(accepted.is_err(), "a TLS 1.2+ client cannot complete this handshake");
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_1_2_is_refused() {
    let addr = tls11_only_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = smarthost(addr, SmarthostTls::Implicit, password_auth(dir.path(), SENDER, "a-password-1"));
    config.pin_sha256 = Some([0; 32]);
    let f = deliver(&target(&config), "tls11").await.unwrap_err();
    assert_temporary(&f, &format!("smarthost up: TLS handshake with {addr} failed: the server offered no TLS 1.2 or 1.3"));
}

// ---- (d): no STARTTLS, no mail ---------------------------------------------------------

/// A plain-text SMTP server for one connection that never starts TLS: it offers STARTTLS
/// (and then refuses it) only if `offer_starttls`. Returns its address and the lines it
/// received, complete once the client has gone.
async fn cleartext_server(offer_starttls: bool) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        let mut seen = Vec::new();
        w.write_all(b"220 plain.test ESMTP\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" if offer_starttls => b"250-plain.test\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 1000000\r\n",
                "EHLO" => b"250-plain.test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n",
                "STARTTLS" => b"454 4.7.0 TLS not available due to temporary reason\r\n",
                "QUIT" => b"221 2.0.0 bye\r\n",
                // Everything else is accepted: a client that went on would give itself away.
                "DATA" => b"354 go ahead\r\n",
                _ => b"250 2.0.0 ok\r\n",
            };
            if w.write_all(answer).await.is_err() || verb == "QUIT" {
                break;
            }
        }
        seen
    });
    (addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_without_starttls_gets_nothing_in_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    for offer in [false, true] {
        let (addr, server) = cleartext_server(offer).await;
        let config = smarthost(addr, SmarthostTls::Starttls, password_auth(dir.path(), SENDER, "a-password-1"));
        let f = deliver(&target(&config), "cleartext").await.unwrap_err();
        if offer {
            assert_temporary(&f, &format!("smarthost up ({addr}) refused STARTTLS: 454 4.7.0 TLS not available"));
        } else {
            assert_temporary(&f, &format!("smarthost up ({addr}) does not offer STARTTLS; refusing to send in clear text"));
        }
        assert_eq!(f.remote.as_deref(), Some(addr.to_string().as_str()));
        let seen = tokio::time::timeout(Duration::from_secs(20), server).await.expect("the client hung up").unwrap();
        let mut expected = vec![format!("EHLO {HELO}")];
        if offer {
            expected.push("STARTTLS".into());
        }
        expected.push("QUIT".into());
        assert_eq!(seen, expected, "no AUTH, MAIL, RCPT or DATA in clear text");
    }
}

// ---- (e): XOAUTH2 end to end ----------------------------------------------------------

/// An upstream Mailgate accepting the bearer tokens listed in `tokens` (re-read at each AUTH).
async fn xoauth2_upstream(tokens: &Path) -> TestServer {
    let extra = format!("{STANDARD_ENDPOINTS}\n[smtp]\nxoauth2_tokens_file = \"{}\"\n", tokens.display());
    TestServer::start_custom(&extra, &[SENDER, RCPT], None).await
}

fn write_tokens(path: &PathBuf, tokens: &[&str]) {
    let lines: String = tokens.iter().map(|t| format!("{SENDER} {t}\n")).collect();
    std::fs::write(path, lines).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_tokens_are_fetched_cached_refreshed_and_replaced_after_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, &["tok-1", "tok-2"]);
    let upstream = xoauth2_upstream(&tokens).await;
    let endpoint = TokenEndpoint::start().await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "cs-secret-1\n").unwrap();
    let oauth2 = OAuth2 {
        token_url: endpoint.url.clone(),
        client_id: "mailgate-app".into(),
        client_secret: Some(Secret::File(secret)),
        scope: Some("https://outlook.office365.com/.default".into()),
        grant: OAuth2Grant::ClientCredentials,
    };
    let mut config = smarthost(upstream.starttls_addr(), SmarthostTls::Starttls, SmarthostAuth::Xoauth2 { username: SENDER.into(), oauth2 });
    config.ca_file = Some(upstream.cert_path.clone());
    let clock = ManualClock::new();
    let relay = SmarthostTarget::new(&config, HELO, clock.clock());

    // The first delivery fetches tok-1; the second, a little later, reuses it.
    let sent = deliver(&relay, "xoauth2-1").await.unwrap();
    assert_arrived(&upstream, 1, &sent).await;
    assert_eq!(endpoint.requests(), 1);
    let body = endpoint.bodies.lock().unwrap()[0].clone();
    for field in ["grant_type=client_credentials", "client_id=mailgate-app", "client_secret=cs-secret-1", "scope=https%3A%2F%2Foutlook.office365.com%2F.default"] {
        assert!(body.split('&').any(|f| f == field), "{field} in {body}");
    }
    clock.advance(30);
    let sent = deliver(&relay, "xoauth2-2").await.unwrap();
    assert_arrived(&upstream, 2, &sent).await;
    assert_eq!(endpoint.requests(), 1, "a fresh token is reused");

    // Past its expiry: tok-2, one request.
    clock.advance(EXPIRES_IN);
    let sent = deliver(&relay, "xoauth2-3").await.unwrap();
    assert_arrived(&upstream, 3, &sent).await;
    assert_eq!(endpoint.requests(), 2, "one request per refresh, not more");

    // The endpoint now issues tokens the upstream does not know.
    endpoint.revoked.store(true, Ordering::SeqCst);
    clock.advance(EXPIRES_IN);
    let f = deliver(&relay, "xoauth2-revoked").await.unwrap_err();
    assert_temporary(
        &f,
        &format!(
            "smarthost up ({}) rejected the OAuth2 token: 535 5.7.8 Authentication credentials invalid; a new token will be fetched at the next attempt",
            upstream.starttls_addr()
        ),
    );
    assert!(!f.reason.contains("revoked-3"), "the token is never shown: {}", f.reason);
    assert_eq!(endpoint.requests(), 3);

    // The rejected token was dropped: the next attempt fetches tok-4 at once (the clock has
    // not moved), which the upstream now lists (its file is re-read at every AUTH).
    endpoint.revoked.store(false, Ordering::SeqCst);
    write_tokens(&tokens, &["tok-1", "tok-2", "tok-4"]);
    let sent = deliver(&relay, "xoauth2-4").await.unwrap();
    assert_arrived(&upstream, 4, &sent).await;
    assert_eq!(endpoint.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_are_temporary_and_name_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, &["tok-1"]);
    let upstream = xoauth2_upstream(&tokens).await;
    let endpoint = TokenEndpoint::start().await;
    let refresh = dir.path().join("refresh-token");
    std::fs::write(&refresh, "1//refresh-secret").unwrap();
    let oauth2 = OAuth2 {
        token_url: format!("{}-wrong-path", endpoint.url),
        client_id: "google-app".into(),
        client_secret: None,
        scope: None,
        grant: OAuth2Grant::RefreshToken(Secret::File(refresh)),
    };
    let mut config = smarthost(upstream.starttls_addr(), SmarthostTls::Starttls, SmarthostAuth::Xoauth2 { username: SENDER.into(), oauth2 });
    config.ca_file = Some(upstream.cert_path.clone());
    let f = deliver(&target(&config), "no-token").await.unwrap_err();
    assert_temporary(&f, &format!("smarthost up: the OAuth2 token endpoint {}-wrong-path refused the request: HTTP 404: not_found", endpoint.url));
    assert!(!f.reason.contains("refresh-secret"));
    let body = endpoint.bodies.lock().unwrap()[0].clone();
    assert_eq!(body, "grant_type=refresh_token&refresh_token=1%2F%2Frefresh-secret&client_id=google-app");
    assert!(upstream.mailbox(RCPT).is_empty());
}

// ---- the server side of XOAUTH2 ---------------------------------------------------------

fn xoauth2(user: &str, token: &str) -> String {
    mailgate::delivery::smarthost::xoauth2_response(user, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_xoauth2_exchange_as_google_does() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# address token\n{SENDER} good-token\n{RCPT} scanner-token\n")).unwrap();
    let upstream = xoauth2_upstream(&tokens).await;
    let addr = upstream.starttls_addr();

    // Offered after TLS only.
    let mut plain = common::Raw::plain(addr, &upstream.cert_pem).await;
    let ehlo = plain.expect("EHLO c.test", 250).await;
    assert!(!ehlo.contains("XOAUTH2"), "{ehlo}");
    let mut c = common::Raw::starttls(addr, &upstream.cert_pem).await;
    let ehlo = c.expect("EHLO c.test", 250).await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN XOAUTH2"), "{ehlo}");

    // An unknown token: the JSON challenge, the empty line, 535.
    let (code, text) = c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(SENDER, "bad-token"))).await;
    assert_eq!((code, text.as_str()), (334, "334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n"));
    assert_eq!(c.cmd("").await, (535, "535 5.7.8 Authentication credentials invalid\r\n".into()));
    // Another user's token is no better.
    c.expect(&format!("AUTH XOAUTH2 {}", xoauth2(SENDER, "scanner-token")), 334).await;
    c.expect("", 535).await;
    // Without an initial response: an empty challenge, then the response.
    c.expect("AUTH XOAUTH2", 334).await;
    c.expect(&xoauth2(SENDER, "good-token"), 235).await;
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250).await;

    // A valid token for a user whose SMTP AUTH is off is refused as a password would be.
    let changes = mailgate::directory::UserChanges { smtp_auth: Some(false), ..Default::default() };
    upstream.server().directory.set_user(RCPT, &changes).await.unwrap();
    let mut c = common::Raw::starttls(addr, &upstream.cert_pem).await;
    let text = c.expect(&format!("AUTH XOAUTH2 {}", xoauth2(RCPT, "scanner-token")), 535).await;
    assert!(text.contains("SMTP AUTH is disabled for this account"), "{text}");

    // Without a tokens file, XOAUTH2 is neither offered nor accepted.
    let other = TestServer::start_custom(STANDARD_ENDPOINTS, &[SENDER], None).await;
    let mut c = common::Raw::starttls(other.starttls_addr(), &other.cert_pem).await;
    let ehlo = c.expect("EHLO c.test", 250).await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN\r\n") && !ehlo.contains("XOAUTH2"), "{ehlo}");
    c.expect(&format!("AUTH XOAUTH2 {}", xoauth2(SENDER, "good-token")), 504).await;
}
