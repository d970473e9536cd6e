//! Delivery through `mailgate::delivery::lmtp::Lmtp` into a real Dovecot (RFC 2033 LMTP).
//!
//! Each test starts its own Dovecot as a child process (`dovecot -F`) with a configuration
//! written into a temporary directory: only the LMTP service, on a UNIX socket in that
//! directory (no TCP port), a passwd-file listing the test's users (so an unknown user is
//! refused at RCPT, as in production), and Maildirs under the same directory. What Dovecot
//! stored is read back both with `doveadm fetch` and from the Maildir files.
//!
//! Dovecot must be installed (Debian: `dovecot-core dovecot-lmtpd`): without it these
//! tests fail, they do not skip.
//!
//! [`Dovecot`] is meant for more tests here (SMTP -> queue -> LMTP -> Dovecot).

use mailgate::config::LmtpAddress;
use mailgate::delivery::lmtp::Lmtp;
use mailgate::delivery::{Failure, FailureKind, MessageInfo, Target};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
/// The LMTP service binary, from the `dovecot-lmtpd` package.
const LMTP_SERVICE: &str = "/usr/lib/dovecot/lmtp";
/// How long Dovecot may take to start or stop.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running Dovecot in a temporary directory, stopped on drop.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    /// The LMTP UNIX socket.
    pub socket: PathBuf,
    /// The configuration file (for `doveadm -c`).
    pub conf: PathBuf,
    child: Child,
}

/// Who owns the mail and Dovecot's unprivileged processes.
struct Accounts {
    mail_uid: u32,
    mail_gid: u32,
    /// `default_internal_user` / `default_login_user` and their group.
    internal_user: String,
    login_user: String,
    internal_group: String,
}

impl Accounts {
    /// As root, Dovecot's own `dovecot`/`dovenull` users (created by the Debian package) run
    /// its internal processes, and the mail belongs to `nobody`: Dovecot refuses to deliver
    /// as root (uid 0 is below any `first_valid_uid`). Without root, everything runs as us.
    fn for_user(euid: u32) -> Accounts {
        if euid == 0 {
            let (uid, gid) = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
            let parse = |s: String| s.parse::<u32>().unwrap_or_else(|_| panic!("`id nobody` gave {s:?}"));
            return Accounts {
                mail_uid: parse(uid),
                mail_gid: parse(gid),
                internal_user: "dovecot".into(),
                login_user: "dovenull".into(),
                internal_group: "dovecot".into(),
            };
        }
        let parse = |s: String| s.parse::<u32>().unwrap_or_else(|_| panic!("`id` gave {s:?}"));
        let me = id(&["-un"]);
        Accounts {
            mail_uid: euid,
            mail_gid: parse(id(&["-g"])),
            internal_user: me.clone(),
            login_user: me,
            internal_group: id(&["-gn"]),
        }
    }
}

/// The output of `id <args>`.
fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("cannot run id");
    assert!(out.status.success(), "id {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn require_dovecot() {
    for binary in [DOVECOT, DOVEADM, LMTP_SERVICE] {
        assert!(
            Path::new(binary).exists(),
            "Dovecot is not installed ({binary} is missing): these tests need the Debian packages \
             dovecot-core and dovecot-lmtpd (apt-get install dovecot-core dovecot-lmtpd; .ci/run installs them)"
        );
    }
}

/// The configuration: only LMTP on a UNIX socket, every path inside `dir`.
fn config(dir: &Path, accounts: &Accounts) -> String {
    let d = dir.display();
    format!(
        r#"# Written by tests/dovecot.rs.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
# Only LMTP: the login services (the only ones with TCP listeners by default) do not
# start, so the LMTP socket below is the only way in.
protocols = lmtp
ssl = no
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:{d}/mail/%d/%n
# Store the message with CRLF line ends, as it was sent: the tests compare bytes.
mail_save_crlf = yes
# Quota, so that a test can fill a mailbox: Dovecot then refuses that recipient after
# the message (552 5.2.2), not at RCPT (lmtp_rcpt_check_quota = no, the default).
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"#,
        internal = accounts.internal_user,
        group = accounts.internal_group,
        login = accounts.login_user,
        uid = accounts.mail_uid,
        gid = accounts.mail_gid,
    )
}

impl Dovecot {
    /// Starts Dovecot knowing `users` (full addresses: `alice@contoso.test`) and waits until
    /// its LMTP socket answers. Any other address is refused at RCPT (`550 5.1.1`).
    pub async fn start(users: &[&str]) -> Dovecot {
        Dovecot::start_with_full(users, &[]).await
    }

    /// Like [`Dovecot::start`], and `full` are users whose 1 KiB quota refuses any message
    /// larger (`552 5.2.2 Quota exceeded`, after the content, per recipient).
    pub async fn start_with_full(users: &[&str], full: &[&str]) -> Dovecot {
        require_dovecot();
        let dir = tempfile::tempdir().expect("temporary directory");
        let accounts = Accounts::for_user(std::fs::metadata(dir.path()).unwrap().uid());
        // The mail user must reach <dir>/mail: the directory is ours, the mail is theirs.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).unwrap();
        std::os::unix::fs::chown(&mail, Some(accounts.mail_uid), Some(accounts.mail_gid)).unwrap();
        let mut passwd = String::new();
        for user in users.iter().chain(full) {
            let (local, domain) = user.split_once('@').expect("users are full addresses");
            let home = mail.join(domain).join(local);
            let extra = if full.contains(user) { "userdb_quota_rule=*:storage=1K" } else { "" };
            passwd.push_str(&format!("{user}::{}:{}::{}::{extra}\n", accounts.mail_uid, accounts.mail_gid, home.display()));
        }
        std::fs::write(dir.path().join("users"), passwd).unwrap();
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(&conf, config(dir.path(), &accounts)).unwrap();

        let stderr = std::fs::File::create(dir.path().join("dovecot.stderr")).unwrap();
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DOVECOT}: {e}"));
        let socket = dir.path().join("run/lmtp");
        let mut dovecot = Dovecot { dir, socket, conf, child };
        dovecot.wait_ready().await;
        dovecot
    }

    /// Polls the LMTP socket until it greets with 220; fails at once if Dovecot exits.
    async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Dovecot exited during start-up ({status}):\n{}", self.diagnostics());
            }
            if self.greets().await {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "Dovecot's LMTP socket did not answer within {DEADLINE:?}:\n{}", self.diagnostics());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn greets(&self) -> bool {
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), tokio::net::UnixStream::connect(&self.socket)).await else {
            return false;
        };
        let mut greeting = [0u8; 4];
        matches!(tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut greeting)).await, Ok(Ok(_)) if &greeting == b"220 ")
    }

    /// The LMTP address to give Mailgate.
    pub fn address(&self) -> LmtpAddress {
        LmtpAddress::Unix(self.socket.clone())
    }

    /// A Mailgate LMTP target for this Dovecot.
    pub fn target(&self) -> Lmtp {
        Lmtp::new(self.address(), "mailgate.test", Duration::from_secs(30))
    }

    /// Dovecot's log and its standard error, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- dovecot.log ---\n{}--- stderr ---\n{}", read("dovecot.log"), read("dovecot.stderr"))
    }

    fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new(DOVEADM).arg("-c").arg(&self.conf).args(args).output().expect("cannot run doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every message in `user`'s mailboxes as Dovecot reads them back (`doveadm fetch text`).
    pub fn fetch_all(&self, user: &str) -> String {
        self.doveadm(&["fetch", "-u", user, "text", "all"])
    }

    /// The number of messages in `user`'s INBOX, as Dovecot counts them.
    pub fn inbox_count(&self, user: &str) -> usize {
        self.doveadm(&["search", "-u", user, "mailbox", "INBOX", "all"]).lines().count()
    }

    /// The Maildir of `user` (which Dovecot creates at the first delivery).
    pub fn maildir(&self, user: &str) -> PathBuf {
        let (local, domain) = user.split_once('@').expect("users are full addresses");
        self.dir.path().join("mail").join(domain).join(local)
    }

    /// The message files in `user`'s Maildir INBOX (`new/` and `cur/`), sorted.
    pub fn maildir_files(&self, user: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir(user).join(sub)) else { continue };
            files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        }
        files.sort();
        files
    }

    /// Stops Dovecot and waits for it; kills it if it does not stop.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SIGTERM: the master stops its services and exits (`doveadm stop` does the same,
        // then polls once a second).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The results of one delivery: per recipient at RCPT, then per accepted recipient at the end.
struct Outcome {
    rcpt: Vec<Result<(), Failure>>,
    commit: Vec<Result<(), Failure>>,
}

/// Delivers `content` through Mailgate's LMTP target, step by step as the queue runner does.
async fn deliver(target: &Lmtp, sender: &str, recipients: &[&str], content: &[u8]) -> Outcome {
    let info = MessageInfo { queue_id: "T1".into(), sender: sender.into(), size: content.len() as u64 };
    let mut t = target.begin(&info).await.unwrap_or_else(|f| panic!("begin failed: {f}"));
    let mut rcpt = Vec::new();
    for r in recipients {
        rcpt.push(t.rcpt(r).await);
    }
    if rcpt.iter().any(|r| r.is_ok()) {
        t.body(&mut &content[..]).await.unwrap_or_else(|f| panic!("body failed: {f}"));
    }
    let commit = t.commit().await;
    Outcome { rcpt, commit }
}

/// A message whose lines start with dots (one is a lone `.`, which would end the DATA
/// early if it were not stuffed), with 8-bit text, large enough to take several writes.
fn tricky_message() -> Vec<u8> {
    let mut m = b"From: Scanner <scanner@contoso.test>\r\nTo: alice@contoso.test, bob@contoso.test\r\n\
Subject: LMTP round trip\r\nMessage-ID: <lmtp-1@contoso.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\r\n.\r\n..\r\n.hidden line\r\n...three dots\r\n"
        .to_vec();
    for i in 0..3000 {
        m.extend_from_slice(format!(".{i:05} a line starting with a dot, padded to exercise chunking ..........\r\n").as_bytes());
    }
    m.extend_from_slice(b"last line\r\n");
    m
}

/// Dovecot prepends its own trace headers (`Return-Path`, `Received`); the rest must be
/// exactly what was sent.
fn assert_stored(stored: &[u8], sender: &str, content: &[u8]) {
    assert!(
        stored.ends_with(content),
        "stored message differs from the content sent; it starts with:\n{}",
        String::from_utf8_lossy(&stored[..stored.len().min(2000)])
    );
    let added = String::from_utf8_lossy(&stored[..stored.len() - content.len()]);
    assert!(added.starts_with(&format!("Return-Path: <{sender}>\r\n")), "{added}");
    assert!(added.contains("with LMTP"), "{added}");
}

#[tokio::test]
async fn delivers_one_message_to_two_mailboxes_byte_for_byte() {
    let dovecot = Dovecot::start(&["alice@contoso.test", "bob@contoso.test"]).await;
    let content = tricky_message();
    let out = deliver(&dovecot.target(), "scanner@contoso.test", &["alice@contoso.test", "bob@contoso.test"], &content).await;
    assert!(out.rcpt.iter().all(|r| r.is_ok()), "{:?}", out.rcpt);
    assert_eq!(out.commit.len(), 2);
    assert!(out.commit.iter().all(|r| r.is_ok()), "{:?}\n{}", out.commit, dovecot.diagnostics());

    for user in ["alice@contoso.test", "bob@contoso.test"] {
        let files = dovecot.maildir_files(user);
        assert_eq!(files.len(), 1, "{user}: {files:?}");
        assert_stored(&std::fs::read(&files[0]).unwrap(), "scanner@contoso.test", &content);
        assert_eq!(dovecot.inbox_count(user), 1, "{user}");
        let fetched = dovecot.fetch_all(user);
        assert!(fetched.contains("Subject: LMTP round trip"), "{fetched}");
        assert!(fetched.contains(".hidden line") && !fetched.contains("..hidden"), "{fetched}");
        assert!(fetched.contains("Grüße aus Köln."), "{fetched}");
        assert!(fetched.contains(".02999 a line starting") && fetched.contains("last line"), "the message was cut short");
    }
}

#[tokio::test]
async fn unknown_recipient_is_refused_permanently_and_the_other_delivered() {
    let dovecot = Dovecot::start(&["alice@contoso.test"]).await;
    let content = b"Subject: partly refused\r\n\r\nhello\r\n.\r\n".to_vec();
    let out = deliver(&dovecot.target(), "scanner@contoso.test", &["ghost@contoso.test", "alice@contoso.test"], &content).await;

    let refused = out.rcpt[0].as_ref().expect_err("Dovecot must refuse an unknown user");
    assert_eq!(refused.kind, FailureKind::Permanent, "{refused}");
    assert!(refused.is_reply && refused.reason.starts_with("550 5.1.1"), "{refused:?}");
    assert!(refused.to_string().contains(&format!("{} said: 550", dovecot.address())), "{refused}");
    assert!(out.rcpt[1].is_ok(), "{:?}", out.rcpt[1]);
    assert_eq!(out.commit.len(), 1, "one reply per accepted recipient");
    assert!(out.commit[0].is_ok(), "{:?}", out.commit[0]);

    let files = dovecot.maildir_files("alice@contoso.test");
    assert_eq!(files.len(), 1);
    assert_stored(&std::fs::read(&files[0]).unwrap(), "scanner@contoso.test", &content);
    assert!(!dovecot.maildir("ghost@contoso.test").exists());
}

#[tokio::test]
async fn a_full_mailbox_fails_only_its_recipient_after_the_message() {
    let dovecot = Dovecot::start_with_full(&["alice@contoso.test", "bob@contoso.test"], &["full@contoso.test"]).await;
    let content = tricky_message();
    let recipients = ["alice@contoso.test", "full@contoso.test", "bob@contoso.test"];
    let out = deliver(&dovecot.target(), "scanner@contoso.test", &recipients, &content).await;
    assert!(out.rcpt.iter().all(|r| r.is_ok()), "quota is checked after the message: {:?}", out.rcpt);
    assert_eq!(out.commit.len(), 3, "one reply per accepted recipient, in order (RFC 2033 §4.2)");
    assert!(out.commit[0].is_ok() && out.commit[2].is_ok(), "{:?}", out.commit);
    let full = out.commit[1].as_ref().expect_err("the full mailbox must refuse the message");
    assert_eq!(full.kind, FailureKind::Permanent, "{full}");
    assert!(full.is_reply && full.reason.starts_with("552 5.2.2"), "{full:?}");
    for user in ["alice@contoso.test", "bob@contoso.test"] {
        assert_eq!(dovecot.maildir_files(user).len(), 1, "{user}");
    }
    assert!(dovecot.maildir_files("full@contoso.test").is_empty());
}

#[tokio::test]
async fn null_sender_is_delivered_with_an_empty_return_path() {
    let dovecot = Dovecot::start(&["alice@contoso.test"]).await;
    let content = b"Subject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n".to_vec();
    let out = deliver(&dovecot.target(), "", &["alice@contoso.test"], &content).await;
    assert!(out.rcpt[0].is_ok() && out.commit.len() == 1 && out.commit[0].is_ok(), "{:?} {:?}", out.rcpt, out.commit);
    let files = dovecot.maildir_files("alice@contoso.test");
    assert_eq!(files.len(), 1);
    assert_stored(&std::fs::read(&files[0]).unwrap(), "", &content);
}

#[tokio::test]
async fn a_stopped_dovecot_is_a_temporary_failure_naming_the_socket() {
    let mut dovecot = Dovecot::start(&["alice@contoso.test"]).await;
    dovecot.stop();
    let info = MessageInfo { queue_id: "T2".into(), sender: "s@contoso.test".into(), size: 1 };
    let failure = dovecot.target().begin(&info).await.err().expect("no Dovecot, no transaction");
    assert_eq!(failure.kind, FailureKind::Temporary);
    let expected = format!("cannot connect to LMTP server unix:{}: ", dovecot.socket.display());
    assert!(failure.reason.starts_with(&expected), "{failure:?}");
}

// ---- end to end: SMTP -> Mailgate's queue -> LMTP -> Dovecot ------------------------------------------

mod common;

/// Submits one message as alice to `rcpts` through a Mailgate whose local delivery is LMTP.
async fn submit_via_mailgate(t: &common::TestServer, rcpts: &[&str], subject: &str) {
    let mut r = common::Raw::logged_in(t.starttls_addr(), &t.cert_pem, "alice@contoso.test").await;
    r.expect("MAIL FROM:<alice@contoso.test>", 250).await;
    for rcpt in rcpts {
        r.expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
    }
    r.expect("DATA", 354).await;
    let msg = format!("From: <alice@contoso.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@contoso.test>\r\n\r\nscan.pdf attached\r\n..dot line\r\n.\r\n");
    r.send(msg.as_bytes()).await;
    assert_eq!(r.reply().await.0, 250);
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mailgate with `[delivery] local = "lmtp"` delivers into a real Dovecot; a recipient
/// Dovecot does not know (but Mailgate's directory does) earns the sender a DSN, which
/// itself arrives through LMTP in the sender's Dovecot mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgate_delivers_through_lmtp_into_dovecot_and_bounces_what_dovecot_refuses() {
    let dovecot = Dovecot::start(&["alice@contoso.test", "scanner@contoso.test"]).await;
    let extra = format!("{}\n[delivery]\nlocal = \"lmtp\"\nlmtp = \"unix:{}\"\n", common::STANDARD_ENDPOINTS, dovecot.socket.display());
    let t = common::TestServer::start_custom(&extra, &["alice@contoso.test", "scanner@contoso.test", "bob@fabrikam.test"], None).await;
    submit_via_mailgate(&t, &["scanner@contoso.test", "bob@fabrikam.test"], "viadovecot").await;
    wait_until("the message in scanner's Dovecot mailbox", || dovecot.inbox_count("scanner@contoso.test") == 1).await;
    let fetched = dovecot.fetch_all("scanner@contoso.test");
    assert!(fetched.contains("Subject: viadovecot") && fetched.contains("\n.dot line"), "{fetched}");
    assert!(fetched.contains("by mx.test (Mailgate)"), "Mailgate's Received header: {fetched}");
    assert!(t.mailbox("scanner@contoso.test").is_empty(), "nothing in Mailgate's own Maildir");
    wait_until("the DSN in alice's Dovecot mailbox", || dovecot.inbox_count("alice@contoso.test") == 1).await;
    let dsn = dovecot.fetch_all("alice@contoso.test");
    for needle in ["multipart/report", "Final-Recipient: rfc822; bob@fabrikam.test", "550 5.1.1", "Subject: viadovecot"] {
        assert!(dsn.contains(needle), "DSN lacks {needle:?}: {dsn}");
    }
    wait_until("the queue to drain", || t.server().spool.queued_ids().unwrap().is_empty()).await;
}
