//! Process-level tests: the real `mailgate` binary, started as a separate process, driven
//! with its own CLI and with Python's smtplib as the SMTP client.
//!
//! Everything lives in a temporary directory; every listener is `127.0.0.1:0` and the
//! ports are learnt from the `listening <endpoint> <ip:port>` lines on stdout. Readiness is
//! never a sleep: each wait polls a condition with a deadline. Child processes are killed
//! when a test panics, and the server's stderr (kept in a file in the temporary directory)
//! is printed when a test fails.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailgate");
const POLL: Duration = Duration::from_millis(50);

// ---- child processes -------------------------------------------------------------------

/// A child process that is killed (SIGKILL) and reaped when dropped, e.g. on a panic.
struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    fn new(child: Child) -> Self {
        ChildGuard { child: Some(child) }
    }
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already taken")
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("child already taken").id()
    }
    /// SIGKILL, then reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Waits for the exit, polling until the deadline; None if it is still running.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads a child's stdout line by line on a thread, so that reads can have a deadline.
fn line_channel(stdout: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line before the deadline; None at EOF or timeout.
fn next_line(rx: &Receiver<String>, deadline: Instant) -> Option<String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(l) => Some(l),
        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
    }
}

/// Sends SIGTERM with the `kill` command (no libc).
fn sigterm(pid: u32) {
    let st = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
    assert!(st.success(), "kill -TERM {pid} failed: {st}");
}

/// Polls `cond` every 50 ms until it is true or the deadline passes.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

// ---- a running server --------------------------------------------------------------------

/// A `mailgate serve` or `mailgate demo` process with its listeners.
struct Server {
    guard: ChildGuard,
    listeners: BTreeMap<String, SocketAddr>,
    /// Every stdout line read so far.
    stdout: Vec<String>,
    lines: Receiver<String>,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `mailgate <args>` in `cwd` and reads stdout until `endpoints` listening
    /// lines have arrived (deadline 20 s). Stderr is appended to `stderr_path`.
    fn start(args: &[&str], cwd: &Path, stderr_path: &Path, endpoints: usize) -> Server {
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(stderr_path).expect("stderr file");
        writeln!(log, "===== mailgate {} =====", args.join(" ")).unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env_remove("MAILGATE_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn mailgate");
        let lines = line_channel(child.stdout.take().unwrap());
        let mut server = Server {
            guard: ChildGuard::new(child),
            listeners: BTreeMap::new(),
            stdout: Vec::new(),
            lines,
            stderr_path: stderr_path.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.listeners.len() < endpoints {
            let Some(line) = next_line(&server.lines, deadline) else {
                panic!(
                    "mailgate {args:?} did not print {endpoints} listening line(s) within 20 s; stdout so far: {:?}",
                    server.stdout
                );
            };
            server.stdout.push(line.clone());
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["listening", name, addr] = parts[..] {
                let addr: SocketAddr = addr.parse().unwrap_or_else(|_| panic!("bad listening line {line:?}"));
                assert!(addr.ip().is_loopback(), "listener not on 127.0.0.1: {line}");
                assert_ne!(addr.port(), 0, "port 0 was not resolved: {line}");
                server.listeners.insert(name.to_string(), addr);
            }
        }
        server
    }

    fn serve(config: &Path, stderr_path: &Path, endpoints: usize) -> Server {
        let cwd = config.parent().unwrap();
        Server::start(&["--config", config.to_str().unwrap(), "serve"], cwd, stderr_path, endpoints)
    }

    fn port(&self, endpoint: &str) -> u16 {
        self.listeners.get(endpoint).unwrap_or_else(|| panic!("no endpoint {endpoint}: {:?}", self.listeners)).port()
    }

    /// Reads stdout lines until one satisfies `pred` (deadline 20 s).
    fn read_stdout_until(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Some(line) = next_line(&self.lines, deadline) else {
                panic!("stdout never showed {what}; stdout so far: {:#?}", self.stdout);
            };
            let done = pred(&line);
            self.stdout.push(line);
            if done {
                return;
            }
        }
    }

    /// SIGTERM, then the exit status within `timeout`.
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        sigterm(self.guard.pid());
        self.guard
            .wait_until(Instant::now() + timeout)
            .unwrap_or_else(|| panic!("mailgate did not exit within {timeout:?} of SIGTERM"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.guard.kill9();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
            eprintln!("----- mailgate stderr ({}) -----\n{log}\n----- end of mailgate stderr -----", self.stderr_path.display());
        }
    }
}

// ---- a test environment: config, certificate, CLI ---------------------------------------------

const CONFIG: &str = r#"hostname = "mx.test"
data_dir = "data"

[[tls.certificate]]
cert = "cert.pem"
key = "key.pem"

[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"

[[endpoint]]
name = "standard-implicit"
listen = ["127.0.0.1:0"]
tls_mode = "implicit"
"#;

const ALICE_PW: &str = "alice-password-1";
const SCANNER_PW: &str = "scanner-password-1";

struct Env {
    tmp: tempfile::TempDir,
    config: PathBuf,
    cafile: PathBuf,
}

impl Env {
    /// A temporary directory with the two-endpoint config and a certificate for localhost.
    fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cert, key) = mailgate::tls::self_signed_rsa(&["localhost", "127.0.0.1"], 30).expect("certificate");
        std::fs::write(tmp.path().join("cert.pem"), cert).unwrap();
        std::fs::write(tmp.path().join("key.pem"), key).unwrap();
        let config = tmp.path().join("mailgate.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let cafile = tmp.path().join("cert.pem");
        Env { tmp, config, cafile }
    }

    /// contoso / contoso.test with alice and scanner, made with the CLI.
    fn with_contoso() -> Env {
        let env = Env::new();
        env.ok(&["tenant", "add", "contoso"], None);
        env.ok(&["domain", "add", "contoso.test", "--tenant", "contoso"], None);
        env.ok(&["user", "add", "alice@contoso.test", "--password-stdin"], Some(ALICE_PW));
        env.ok(&["user", "add", "scanner@contoso.test", "--password-stdin"], Some(SCANNER_PW));
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn stderr_log(&self) -> PathBuf {
        self.path("mailgate-stderr.log")
    }

    fn data(&self) -> PathBuf {
        self.path("data")
    }

    fn mailbox(&self, address: &str) -> PathBuf {
        let (local, domain) = address.split_once('@').unwrap();
        self.data().join("maildir").join(domain).join(local).join("new")
    }

    fn serve(&self) -> Server {
        Server::serve(&self.config, &self.stderr_log(), 2)
    }

    /// `mailgate --config CONFIG <args>`, with `stdin` (a line) if given.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(&self.config, args, stdin)
    }

    /// A CLI command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "mailgate {args:?} failed ({}): stdout {:?} stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A CLI command that must fail with status 1 and one line on stderr containing every
    /// string of `expect`; returns that line.
    fn fails(&self, args: &[&str], stdin: Option<&str>, expect: &[&str]) -> String {
        let out = self.cli(args, stdin);
        assert_one_line_error(&format!("{args:?}"), &out, expect)
    }
}

fn run_cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).args(args).env_remove("MAILGATE_CONFIG").env_remove("RUST_LOG");
    cmd.current_dir(config.parent().unwrap());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn mailgate");
    if let Some(text) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(format!("{text}\n").as_bytes()).unwrap();
    }
    child.wait_with_output().expect("mailgate output")
}

fn assert_one_line_error(what: &str, out: &Output, expect: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{what}: expected exit status 1, got {}; stderr {stderr:?}", out.status);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected a one-line error on stderr, got {stderr:?}");
    let line = lines[0].to_string();
    assert!(line.starts_with("mailgate: error: "), "{what}: unexpected error line {line:?}");
    for e in expect {
        assert!(line.contains(e), "{what}: error {line:?} does not mention {e:?}");
    }
    assert!(out.stdout.is_empty(), "{what}: a failed command printed on stdout: {:?}", String::from_utf8_lossy(&out.stdout));
    line
}

// ---- the SMTP client: Python's smtplib -----------------------------------------------------------

/// One Python program for every client role; argv[1] is the role, argv[2] a JSON object.
/// Each result is one JSON line on stdout, flushed at once.
const PY_CLIENT: &str = r#"
import json, smtplib, ssl, sys

def out(**kw):
    print(json.dumps(kw), flush=True)

def err_of(e):
    if isinstance(e, smtplib.SMTPResponseException):
        return e.smtp_code, e.smtp_error.decode('utf-8', 'replace')
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        code, msg = list(e.recipients.values())[0]
        return code, msg.decode('utf-8', 'replace')
    return None, '%s: %s' % (type(e).__name__, e)

def connect(a):
    # Connect to "localhost" (127.0.0.1 here; checked below) so that smtplib verifies
    # the certificate for the name "localhost".
    ctx = ssl.create_default_context(cafile=a['cafile'])
    if a.get('mode') == 'implicit':
        s = smtplib.SMTP_SSL('localhost', a['port'], local_hostname='client.test', context=ctx, timeout=20)
    else:
        s = smtplib.SMTP('localhost', a['port'], local_hostname='client.test', timeout=20)
    peer = s.sock.getpeername()[0]
    if peer != '127.0.0.1':
        raise SystemExit('connected to %s, not 127.0.0.1' % peer)
    s.ehlo()
    if a.get('mode') != 'implicit' and not a.get('plain'):
        code, _ = s.starttls(context=ctx)
        if code != 220:
            raise SystemExit('STARTTLS refused: %s' % code)
        s.ehlo()
    return s

def login(s, a):
    s.user, s.password = a['user'], a['password']
    try:
        code, msg = s.auth('PLAIN', s.auth_plain, initial_response_ok=True)
        return code, msg.decode('utf-8', 'replace')
    except Exception as e:
        return err_of(e)

def message(a, msgid):
    return ('From: %s\nTo: %s\nSubject: test %s\nMessage-ID: <%s>\n\nHello from the process tests.\n'
            % (a['from'], ', '.join(a['to']), msgid, msgid))

role, a = sys.argv[1], json.loads(sys.argv[2])

if role == 'login':
    s = connect(a)
    code, msg = login(s, a)
    out(code=code, msg=msg)
    try: s.quit()
    except Exception: pass

elif role == 'send':
    s = connect(a)
    code, msg = login(s, a)
    if code != 235:
        out(code=code, msg=msg, sent=False)
    else:
        try:
            s.sendmail(a['from'], a['to'], message(a, a['msgid']))
            out(code=250, msg='sent', sent=True)
        except Exception as e:
            c, m = err_of(e)
            out(code=c, msg=m, sent=False)
    try: s.quit()
    except Exception: pass

elif role == 'burst':
    # Sends n messages in one session; one line per message as soon as its reply is known.
    s = connect(a)
    code, msg = login(s, a)
    if code != 235:
        out(login_failed=code, msg=msg)
    else:
        for i in range(a['n']):
            msgid = '%s-%d@process.test' % (a['prefix'], i)
            try:
                s.sendmail(a['from'], a['to'], message(a, msgid))
                out(ack=msgid)
            except Exception as e:
                out(nack=msgid, error=str(err_of(e)))
                break
    out(done=True)
    try: s.quit()
    except Exception: pass

elif role == 'partial':
    # Starts DATA, sends part of a message and waits (until stdin closes): a message
    # that is never acknowledged. More than the 64 KiB the spool keeps in memory, so
    # that part of it is already in spool/incoming.
    s = connect(a)
    code, msg = login(s, a)
    if code != 235:
        raise SystemExit('login failed: %s %s' % (code, msg))
    s.mail(a['from'])
    s.rcpt(a['to'][0])
    s.putcmd('data')
    code, msg = s.getreply()
    if code != 354:
        raise SystemExit('DATA refused: %s %s' % (code, msg))
    s.send(('Message-ID: <%s>\r\nSubject: partial\r\n\r\n' % a['msgid']).encode() + b'this message never ends\r\n' * 4000)
    out(partial=a['msgid'])
    sys.stdin.read()

elif role == 'idle':
    # EHLO done, then nothing: reports the next reply the server sends unasked.
    s = connect(a)
    out(ready=True)
    try:
        code, msg = s.getreply()
        out(code=code, msg=msg.decode('utf-8', 'replace'))
    except smtplib.SMTPServerDisconnected as e:
        out(code=None, msg='disconnected: %s' % e)

else:
    raise SystemExit('unknown role ' + role)
"#;

/// Starts the Python client in `role` with `args`; stdout lines come through the receiver.
fn py_spawn(role: &str, args: &Value) -> (ChildGuard, Receiver<String>, ChildStdin) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY_CLIENT)
        .arg(role)
        .arg(args.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let stdin = child.stdin.take().unwrap();
    let rx = line_channel(child.stdout.take().unwrap());
    (ChildGuard::new(child), rx, stdin)
}

/// Runs the Python client to its end (deadline 30 s); returns its JSON lines.
fn py_run(role: &str, args: &Value) -> Vec<Value> {
    let (mut guard, rx, stdin) = py_spawn(role, args);
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut results = Vec::new();
    while let Some(line) = next_line(&rx, deadline) {
        results.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("python printed {line:?}: {e}")));
    }
    let status = guard.wait_until(deadline).expect("python client did not finish within 30 s");
    assert!(status.success(), "python client {role} {args} failed: {status}; output {results:?}");
    results
}

fn py_one(role: &str, args: &Value) -> Value {
    let mut r = py_run(role, args);
    assert_eq!(r.len(), 1, "python client {role}: expected one result, got {r:?}");
    r.remove(0)
}

/// An AUTH PLAIN login over STARTTLS; returns (code, text).
fn login(cafile: &Path, port: u16, user: &str, password: &str) -> (i64, String) {
    let v = py_one(
        "login",
        &serde_json::json!({"port": port, "cafile": cafile, "user": user, "password": password}),
    );
    (v["code"].as_i64().unwrap_or(-1), v["msg"].as_str().unwrap_or_default().to_string())
}

/// Retries a login until `accept` approves the reply, for at most `timeout`.
fn login_until(
    cafile: &Path,
    port: u16,
    user: &str,
    password: &str,
    timeout: Duration,
    accept: impl Fn(i64, &str) -> bool,
) -> (i64, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, msg) = login(cafile, port, user, password);
        if accept(code, &msg) {
            return (code, msg);
        }
        if Instant::now() >= deadline {
            panic!("login of {user} still gave {code} {msg:?} after {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Logs in and sends one message; returns the JSON result.
fn send(cafile: &Path, mode: &str, port: u16, user: &str, password: &str, to: &str, msgid: &str) -> Value {
    py_one(
        "send",
        &serde_json::json!({"mode": mode, "port": port, "cafile": cafile, "user": user,
            "password": password, "from": user, "to": [to], "msgid": msgid}),
    )
}

// ---- mailboxes ---------------------------------------------------------------------------------

/// Message-ID -> number of files with it, in a Maildir `new/` directory.
fn maildir_ids(new_dir: &Path) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    let Ok(entries) = std::fs::read_dir(new_dir) else { return ids };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        for line in text.lines() {
            if line.len() > 11 && line[..11].eq_ignore_ascii_case("message-id:") {
                let id = line[11..].trim().trim_start_matches('<').trim_end_matches('>').to_string();
                *ids.entry(id).or_insert(0) += 1;
            }
        }
    }
    ids
}

fn wait_for_ids(new_dir: &Path, ids: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let found = maildir_ids(new_dir);
        let missing: Vec<&String> = ids.iter().filter(|id| !found.contains_key(*id)).collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "after {timeout:?}, {} of {} acknowledged message(s) are missing from {}: {missing:?}",
                missing.len(),
                ids.len(),
                new_dir.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

// ---- 1. the CLI ------------------------------------------------------------------------------------

#[test]
fn cli_administration_and_errors() {
    let env = Env::new();

    // Tenants.
    assert_eq!(env.ok(&["tenant", "add", "contoso"], None).trim(), "tenant contoso added");
    env.ok(&["tenant", "add", "fabrikam"], None);
    env.fails(&["tenant", "add", "contoso"], None, &["tenant contoso already exists"]);
    env.fails(&["tenant", "add", "bad name"], None, &["not a valid tenant name"]);

    // Domains.
    assert_eq!(
        env.ok(&["domain", "add", "Contoso.TEST", "--tenant", "contoso"], None).trim(),
        "accepted domain contoso.test added to tenant contoso"
    );
    env.fails(&["domain", "add", "x.test", "--tenant", "nope"], None, &["no tenant named \"nope\""]);
    env.fails(&["domain", "add", "contoso.test", "--tenant", "fabrikam"], None, &["contoso.test already exists"]);

    // Users: password from stdin (not echoed), and generated (printed once).
    let out = env.ok(&["user", "add", "alice@contoso.test", "--password-stdin"], Some(ALICE_PW));
    assert_eq!(out.trim(), "user alice@contoso.test added to tenant contoso");
    assert!(!out.contains(ALICE_PW) && !out.contains("password:"), "the given password was printed: {out:?}");
    let out = env.ok(&["user", "add", "Scanner@Contoso.test"], None);
    let pw_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("password: ")).collect();
    assert_eq!(pw_lines.len(), 1, "expected one `password: ...` line, got {out:?}");
    let scanner_pw = pw_lines[0]["password: ".len()..].trim().to_string();
    assert!(scanner_pw.len() >= 16 && scanner_pw.chars().all(|c| c.is_ascii_alphanumeric()), "{scanner_pw:?}");
    assert!(out.contains("user scanner@contoso.test added to tenant contoso"), "{out:?}");

    env.fails(&["user", "add", "alice@contoso.test", "--password-stdin"], Some(ALICE_PW), &["user alice@contoso.test already exists"]);
    env.fails(
        &["user", "add", "bob@other.test", "--password-stdin"],
        Some("long-enough-pw"),
        &["other.test is not an accepted domain"],
    );
    env.fails(&["user", "add", "dave@contoso.test", "--password-stdin"], Some("short"), &["at least 8 characters"]);
    env.fails(&["user", "add", "dave@contoso.test", "--password-stdin"], Some(""), &["no password on standard input"]);
    env.fails(&["user", "add", "not-an-address", "--password-stdin"], Some("long-enough-pw"), &["not an address"]);

    // user list: table and JSON, with and without --tenant.
    let table = env.ok(&["user", "list"], None);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "header and 2 users expected: {table}");
    assert_eq!(rows[0], ["ADDRESS", "TENANT", "ENABLED", "SMTP_AUTH"]);
    assert_eq!(rows[1], ["alice@contoso.test", "contoso", "on", "on"]);
    assert_eq!(rows[2], ["scanner@contoso.test", "contoso", "on", "on"]);
    let users: Value = serde_json::from_str(&env.ok(&["user", "list", "--format", "json"], None)).unwrap();
    assert_eq!(
        users,
        serde_json::json!([
            {"address": "alice@contoso.test", "tenant": "contoso", "enabled": true, "smtp_auth": true},
            {"address": "scanner@contoso.test", "tenant": "contoso", "enabled": true, "smtp_auth": true},
        ])
    );
    let none: Value = serde_json::from_str(&env.ok(&["user", "list", "--tenant", "fabrikam", "--format", "json"], None)).unwrap();
    assert_eq!(none, serde_json::json!([]));
    env.fails(&["user", "list", "--tenant", "nope"], None, &["no tenant named \"nope\""]);

    // user set.
    assert_eq!(
        env.ok(&["user", "set", "scanner@contoso.test", "--smtp-auth", "off"], None).trim(),
        "user scanner@contoso.test: enabled on, smtp-auth off"
    );
    assert_eq!(
        env.ok(&["user", "set", "alice@contoso.test", "--enabled", "off"], None).trim(),
        "user alice@contoso.test: enabled off, smtp-auth on"
    );
    let table = env.ok(&["user", "list"], None);
    assert!(table.lines().any(|l| l.split_whitespace().eq(["alice@contoso.test", "contoso", "off", "on"])), "{table}");
    assert!(table.lines().any(|l| l.split_whitespace().eq(["scanner@contoso.test", "contoso", "on", "off"])), "{table}");
    env.ok(&["user", "set", "alice@contoso.test", "--enabled", "on"], None);
    env.fails(&["user", "set", "alice@contoso.test"], None, &["nothing to change"]);
    env.fails(&["user", "set", "nobody@contoso.test", "--enabled", "off"], None, &["no user nobody@contoso.test"]);

    // user passwd: from stdin, and generated.
    assert_eq!(
        env.ok(&["user", "passwd", "alice@contoso.test", "--password-stdin"], Some("alice-password-2")).trim(),
        "password of alice@contoso.test changed"
    );
    env.fails(&["user", "passwd", "alice@contoso.test", "--password-stdin"], Some("short"), &["at least 8 characters"]);
    env.fails(&["user", "passwd", "nobody@contoso.test", "--password-stdin"], Some("long-enough-pw"), &["no user nobody@contoso.test"]);
    let out = env.ok(&["user", "passwd", "alice@contoso.test"], None);
    let pw_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("password: ")).collect();
    assert_eq!(pw_lines.len(), 1, "expected one `password: ...` line, got {out:?}");
    let alice_pw = pw_lines[0]["password: ".len()..].trim().to_string();
    assert_ne!(alice_pw, "alice-password-2");

    // Tenants: list and show, table and JSON.
    let table = env.ok(&["tenant", "list"], None);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, vec![vec!["TENANT", "USERS", "DOMAINS"], vec!["contoso", "2", "contoso.test"], vec!["fabrikam", "0"]]);
    let tenants: Value = serde_json::from_str(&env.ok(&["tenant", "list", "--format", "json"], None)).unwrap();
    assert_eq!(
        tenants,
        serde_json::json!([
            {"name": "contoso", "domains": ["contoso.test"], "users": 2, "legacy": {"allowed": false, "until": null, "users": [], "networks": [], "forbidden": false}},
            {"name": "fabrikam", "domains": [], "users": 0, "legacy": {"allowed": false, "until": null, "users": [], "networks": [], "forbidden": false}},
        ])
    );
    let show = env.ok(&["tenant", "show", "contoso"], None);
    let show: Vec<Vec<&str>> = show.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(show[..3], vec![vec!["tenant:", "contoso"], vec!["domains:", "contoso.test"], vec!["users:", "2"]]);
    assert_eq!(show[4], vec!["opted", "in:", "off"]);
    let show: Value = serde_json::from_str(&env.ok(&["tenant", "show", "contoso", "--format", "json"], None)).unwrap();
    assert_eq!(show, serde_json::json!({"name": "contoso", "domains": ["contoso.test"], "users": 2, "legacy": {"allowed": false, "until": null, "users": [], "networks": [], "forbidden": false}}));
    env.fails(&["tenant", "show", "nope"], None, &["no tenant named \"nope\""]);

    // check-config: good, then bad keys.
    let out = env.ok(&["check-config"], None);
    assert!(out.contains("OK (2 endpoint(s), 1 certificate(s)"), "{out:?}");
    let bad = env.path("bad.toml");
    std::fs::write(&bad, CONFIG.replacen("127.0.0.1:0", "nonsense", 1)).unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    assert_one_line_error("check-config (bad listen)", &out, &["endpoint[0].listen[0]", "nonsense"]);
    std::fs::write(&bad, CONFIG.replacen("tls_mode = \"implicit\"", "tls_mode = \"implicit\"\ntls_versions = [\"1.1\"]", 1)).unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    assert_one_line_error("check-config (TLS 1.1 only)", &out, &["endpoint[1].tls_versions", "\"1.2\" or \"1.3\""]);
    std::fs::write(&bad, CONFIG.replacen("tls_mode = \"implicit\"", "tls_mode = \"implicit\"\ntls_versions = [\"1.2\", \"2.0\"]", 1)).unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    assert_one_line_error("check-config (TLS 2.0)", &out, &["endpoint[1].tls_versions[1]"]);
    // A smart host whose secret file is missing: named, the secret never printed.
    std::fs::write(&bad, format!("{CONFIG}\n[[smarthost]]\nname = \"up\"\naddress = \"relay.example.net:587\"\nusername = \"u\"\npassword_file = \"missing.pass\"\n")).unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    assert_one_line_error("check-config (missing secret)", &out, &["smart host up", "cannot read secret file", "missing.pass"]);
    std::fs::write(env.path("missing.pass"), "s3cret-value\n").unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 smart host(s)"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    // An unknown key: the message names it (the TOML parser's message spans several lines).
    std::fs::write(&bad, format!("bogus_key = 1\n{CONFIG}")).unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "unknown key: {stderr}");
    assert!(stderr.starts_with("mailgate: error: ") && stderr.contains("bogus_key"), "unknown key not named: {stderr}");
    // A missing certificate file.
    std::fs::write(&bad, CONFIG.replace("cert = \"cert.pem\"", "cert = \"missing.pem\"")).unwrap();
    let out = run_cli(&bad, &["check-config"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"), "{:?}", String::from_utf8_lossy(&out.stderr));

    // The passwords the CLI printed are the real ones: check them against a server.
    let server = env.serve();
    let port = server.port("standard-starttls");
    let (code, msg) = login(&env.cafile, port, "alice@contoso.test", &alice_pw);
    assert_eq!(code, 235, "alice with the generated password: {msg}");
    let (code, msg) = login(&env.cafile, port, "alice@contoso.test", "alice-password-2");
    assert_eq!((code, msg.starts_with("5.7.8")), (535, true), "alice with the replaced password: {msg}");
    let (code, msg) = login(&env.cafile, port, "scanner@contoso.test", &scanner_pw);
    assert_eq!(code, 535, "scanner has SMTP AUTH off: {msg}");
    assert!(msg.contains("SMTP AUTH is disabled"), "{msg}");
    env.ok(&["user", "set", "scanner@contoso.test", "--smtp-auth", "on"], None);
    let (code, msg) = login_until(&env.cafile, port, "scanner@contoso.test", &scanner_pw, Duration::from_secs(2), |c, _| c == 235);
    assert_eq!(code, 235, "{msg}");
    drop(server);
}

// ---- 2. CLI changes apply to a running server --------------------------------------------------------

#[test]
fn cli_changes_apply_to_a_running_server() {
    let env = Env::with_contoso();
    let server = env.serve();
    let port = server.port("standard-starttls");
    let alice = "alice@contoso.test";

    let (code, msg) = login(&env.cafile, port, alice, ALICE_PW);
    assert_eq!(code, 235, "first login: {msg}");

    // SMTP AUTH off: refused at the next login, saying why (the CLI tells the server,
    // whose lookup cache would otherwise keep the user for directory.cache_ttl).
    env.ok(&["user", "set", alice, "--smtp-auth", "off"], None);
    let (code, msg) = login(&env.cafile, port, alice, ALICE_PW);
    assert_eq!(code, 535, "{msg}");
    assert!(msg.contains("SMTP AUTH is disabled"), "reply does not say SMTP AUTH is disabled: {msg:?}");

    // A disabled account says so (after smtp-auth on again).
    env.ok(&["user", "set", alice, "--smtp-auth", "on", "--enabled", "off"], None);
    let (code, msg) = login_until(&env.cafile, port, alice, ALICE_PW, Duration::from_secs(2), |_, m| !m.contains("SMTP AUTH"));
    assert_eq!(code, 535, "{msg}");
    assert!(msg.contains("account is disabled"), "{msg:?}");

    // New password: the old one fails (535 5.7.8), the new one works.
    env.ok(&["user", "passwd", alice, "--password-stdin"], Some("alice-password-2"));
    env.ok(&["user", "set", alice, "--enabled", "on"], None);
    let (code, msg) = login_until(&env.cafile, port, alice, "alice-password-2", Duration::from_secs(2), |c, _| c == 235);
    assert_eq!(code, 235, "{msg}");
    let (code, msg) = login(&env.cafile, port, alice, ALICE_PW);
    assert_eq!(code, 535, "the old password still works: {msg}");
    assert!(msg.starts_with("5.7.8"), "{msg:?}");

    // A user added while the server runs logs in and receives mail at once.
    env.ok(&["user", "add", "carol@contoso.test", "--password-stdin"], Some("carol-password-1"));
    let (code, msg) = login_until(&env.cafile, port, "carol@contoso.test", "carol-password-1", Duration::from_secs(2), |c, _| c == 235);
    assert_eq!(code, 235, "{msg}");
    let from_alice = unique("to-carol");
    let r = send(&env.cafile, "starttls", port, alice, "alice-password-2", "carol@contoso.test", &from_alice);
    assert_eq!(r["sent"], true, "alice -> carol: {r}");
    let from_carol = unique("carol-self");
    let implicit = server.port("standard-implicit");
    let r = send(&env.cafile, "implicit", implicit, "carol@contoso.test", "carol-password-1", "carol@contoso.test", &from_carol);
    assert_eq!(r["sent"], true, "carol -> carol over implicit TLS: {r}");
    wait_for_ids(&env.mailbox("carol@contoso.test"), &[from_alice, from_carol], Duration::from_secs(20));
    drop(server);
}

// ---- 3. durability across kill -9 ---------------------------------------------------------------------------

/// Kill -9 cycles: `MAILGATE_KILL_CYCLES` (default 3, the reduced form CI runs; the
/// issue's full form is 20 or more: `MAILGATE_KILL_CYCLES=25 cargo test --test process kill_9`).
#[test]
fn acknowledged_messages_survive_kill_9() {
    const N: usize = 20;
    let cycles: usize = std::env::var("MAILGATE_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let env = Env::with_contoso();
    let started = Instant::now();
    let mailbox = env.mailbox("scanner@contoso.test");
    let incoming = env.data().join("spool/incoming");
    let mut acked: Vec<String> = Vec::new();
    let mut unacked: Vec<String> = Vec::new();
    let client = |port: u16, extra: Value| {
        let mut a = serde_json::json!({"port": port, "cafile": env.cafile, "user": "alice@contoso.test",
            "password": ALICE_PW, "from": "alice@contoso.test", "to": ["scanner@contoso.test"]});
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };

    for cycle in 0..cycles {
        let mut server = env.serve();
        let port = server.port("standard-starttls");
        // A restart delivers everything acknowledged before the kill, and leaves no
        // unacknowledged message in incoming/.
        assert_eq!(dir_entries(&incoming), Vec::<String>::new(), "spool/incoming not emptied at start (cycle {cycle})");
        wait_for_ids(&mailbox, &acked, Duration::from_secs(30));

        // A message in the middle of DATA when the server dies: never acknowledged.
        let partial_id = format!("{}@process.test", unique(&format!("partial-{cycle}")));
        let (_partial, partial_rx, partial_stdin) = py_spawn("partial", &client(port, serde_json::json!({"msgid": partial_id})));
        let line = next_line(&partial_rx, Instant::now() + Duration::from_secs(20)).expect("partial client did not start DATA");
        assert!(line.contains("partial"), "{line}");
        wait_for("the partial message in spool/incoming", Duration::from_secs(10), || !dir_entries(&incoming).is_empty());
        unacked.push(partial_id);

        // N messages; SIGKILL right after the last acknowledgement.
        let prefix = unique(&format!("durable-{cycle}"));
        let (mut burst, rx, _stdin) = py_spawn("burst", &client(port, serde_json::json!({"n": N, "prefix": prefix})));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut cycle_acks = 0;
        let mut problems = Vec::new();
        loop {
            let Some(line) = next_line(&rx, deadline) else { panic!("burst client stalled (cycle {cycle})") };
            let v: Value = serde_json::from_str(&line).unwrap();
            if let Some(id) = v["ack"].as_str() {
                acked.push(id.to_string());
                cycle_acks += 1;
                if cycle_acks == N {
                    server.guard.kill9();
                    break;
                }
            } else {
                problems.push(line);
                if v["done"] == true {
                    server.guard.kill9();
                    break;
                }
            }
        }
        assert!(problems.is_empty() && cycle_acks == N, "cycle {cycle}: only {cycle_acks}/{N} acknowledged: {problems:?}");
        drop(partial_stdin);
        burst.wait_until(Instant::now() + Duration::from_secs(20));
        drop(server);
    }

    // The last restart: everything acknowledged in every cycle is delivered.
    let server = env.serve();
    assert_eq!(dir_entries(&incoming), Vec::<String>::new(), "spool/incoming not emptied after the last restart");
    wait_for_ids(&mailbox, &acked, Duration::from_secs(30));
    let found = maildir_ids(&mailbox);
    for id in &unacked {
        assert!(!found.contains_key(id), "a message that was never acknowledged was delivered: {id}");
    }
    assert_eq!(acked.len(), N * cycles);
    // At least once is the guarantee; exactly once is the normal case. Duplicates are
    // reported (docs/operations.md says where a crash can cause one).
    let duplicates: Vec<_> = found.iter().filter(|(id, n)| **n > 1 && acked.contains(id)).collect();
    eprintln!("kill -9: {cycles} cycles, {} acknowledged, {} delivered, {} duplicated: {duplicates:?}", acked.len(), found.len(), duplicates.len());
    // And the queue drains completely: no message and no delivery record stays once
    // delivered (an orphan `.done` left by a kill between the two unlinks is removed
    // when the spool opens).
    let queue = env.data().join("spool/queue");
    let queued = || dir_entries(&queue);
    wait_for("spool/queue to drain", Duration::from_secs(20), || queued().is_empty());
    assert_eq!(dir_entries(&incoming), Vec::<String>::new());
    // Half-written Maildir files of the killed processes are gone too.
    let tmp = mailbox.parent().unwrap().join("tmp");
    assert_eq!(dir_entries(&tmp), Vec::<String>::new(), "Maildir tmp/ cleaned at start");
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(20 * cycles as u64 + 20), "durability test took {:?}", started.elapsed());
}

// ---- 4. graceful shutdown --------------------------------------------------------------------------------------

#[test]
fn sigterm_tells_idle_sessions_421_and_exits_0() {
    let env = Env::with_contoso();
    let mut server = env.serve();
    let port = server.port("standard-starttls");
    let implicit = server.port("standard-implicit");

    // Idle sessions after EHLO: in plain text (before STARTTLS), inside STARTTLS, and on
    // the implicit-TLS endpoint.
    let mut clients = Vec::new();
    for (label, args) in [
        ("plain", serde_json::json!({"port": port, "cafile": env.cafile, "plain": true})),
        ("starttls", serde_json::json!({"port": port, "cafile": env.cafile})),
        ("implicit", serde_json::json!({"port": implicit, "cafile": env.cafile, "mode": "implicit"})),
    ] {
        let (guard, rx, stdin) = py_spawn("idle", &args);
        let line = next_line(&rx, Instant::now() + Duration::from_secs(20))
            .unwrap_or_else(|| panic!("idle {label} client did not get ready"));
        assert!(line.contains("ready"), "{label}: {line}");
        clients.push((label, guard, rx, stdin));
    }

    sigterm(server.guard.pid());
    for (label, _guard, rx, _stdin) in &clients {
        let line = next_line(rx, Instant::now() + Duration::from_secs(10))
            .unwrap_or_else(|| panic!("idle {label} client got no reply within 10 s of SIGTERM"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["code"], 421, "{label}: expected 421, got {v}");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(msg.starts_with("4.3.2") && msg.contains("shutting down"), "{label}: {msg:?}");
    }
    let status = server
        .guard
        .wait_until(Instant::now() + Duration::from_secs(10))
        .expect("mailgate did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    let log = std::fs::read_to_string(env.stderr_log()).unwrap();
    assert!(log.contains("stopped"), "no `stopped` in the server log");
    drop(server);
}

// ---- 5. the demo ------------------------------------------------------------------------------------------------

#[test]
fn demo_runs_sends_and_restarts_with_the_same_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let log = tmp.path().join("demo-stderr.log");
    let args = ["demo", "--data", demo.to_str().unwrap(), "--port-base", "0"];

    let mut server = Server::start(&args, tmp.path(), &log, 2);
    server.read_stdout_until("the end of the banner", |l| l.contains("Press Ctrl-C to stop"));
    let starttls = server.port("standard-starttls");
    let implicit = server.port("standard-implicit");

    for f in ["mailgate.toml", "tls/cert.pem", "tls/key.pem", "demo-credentials.txt"] {
        assert!(demo.join(f).is_file(), "demo did not create {f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let creds_path = demo.join("demo-credentials.txt");
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "demo-credentials.txt has mode {mode:o}");
    let mode = std::fs::metadata(demo.join("tls/key.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "tls/key.pem has mode {mode:o}");
    let creds_text = std::fs::read_to_string(&creds_path).unwrap();
    let creds: BTreeMap<String, String> = creds_text
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 2, "credentials line is not `address password`: {l:?}");
            assert!(parts[1].len() >= 12, "weak demo password in {l:?}");
            (parts[0].to_string(), parts[1].to_string())
        })
        .collect();
    assert_eq!(creds_text.lines().count(), 4, "{creds_text}");
    assert_eq!(
        creds.keys().map(String::as_str).collect::<Vec<_>>(),
        ["alice@contoso.test", "bob@fabrikam.test", "printer@fabrikam.test", "scanner@contoso.test"]
    );

    // The banner: a swaks command for the STARTTLS port and a curl command for implicit TLS.
    let stdout = server.stdout.join("\n");
    let swaks = stdout.lines().find(|l| l.trim_start().starts_with("swaks ")).unwrap_or_else(|| panic!("no swaks command: {stdout}"));
    assert!(swaks.contains(&format!("--port {starttls}")), "swaks uses the wrong port: {swaks}");
    let curl = stdout.lines().find(|l| l.trim_start().starts_with("curl ")).unwrap_or_else(|| panic!("no curl command: {stdout}"));
    assert!(curl.contains(&format!("smtps://localhost:{implicit}")), "curl uses the wrong port: {curl}");
    assert!(stdout.contains(&creds["alice@contoso.test"]), "the banner's commands do not carry alice's password");

    // bob -> printer over implicit TLS.
    let cafile = demo.join("tls/cert.pem");
    let msgid = unique("demo");
    let r = send(&cafile, "implicit", implicit, "bob@fabrikam.test", &creds["bob@fabrikam.test"], "printer@fabrikam.test", &msgid);
    assert_eq!(r["sent"], true, "bob -> printer: {r}");
    wait_for_ids(&demo.join("maildir/fabrikam.test/printer/new"), &[msgid], Duration::from_secs(20));

    let status = server.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "demo exit status after SIGTERM: {status}");
    drop(server);

    // Again on the same directory: everything is reused as it is.
    let mut server = Server::start(&args, tmp.path(), &log, 2);
    server.read_stdout_until("the end of the banner", |l| l.contains("Press Ctrl-C to stop"));
    assert_eq!(std::fs::read_to_string(&creds_path).unwrap(), creds_text, "the second run changed the credentials");
    let (code, msg) = login(
        &cafile,
        server.port("standard-starttls"),
        "alice@contoso.test",
        &creds["alice@contoso.test"],
    );
    assert_eq!(code, 235, "alice's password from the first run: {msg}");
    let status = server.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "second demo exit status after SIGTERM: {status}");
    drop(server);

    let out = run_cli(&demo.join("mailgate.toml"), &["user", "list"], None);
    assert!(out.status.success(), "user list on the demo config: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let users: Vec<&str> = table.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        users,
        ["alice@contoso.test", "scanner@contoso.test", "bob@fabrikam.test", "printer@fabrikam.test"],
        "{table}"
    );
}

/// `mailgate demo --smarthost`: a second demo is the upstream (STARTTLS, its certificate as
/// the CA, AUTH as alice); a message to a domain only the upstream serves arrives there.
#[test]
fn demo_relays_remote_recipients_through_a_smarthost() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("stderr.log");
    let up_dir = tmp.path().join("upstream");
    let mut up = Server::start(&["demo", "--data", up_dir.to_str().unwrap(), "--port-base", "0"], tmp.path(), &log, 4);
    up.read_stdout_until("the end of the banner", |l| l.contains("Press Ctrl-C to stop"));
    let up_config = up_dir.join("mailgate.toml");
    for args in [&["domain", "add", "remote.test", "--tenant", "fabrikam"][..], &["user", "add", "carol@remote.test", "--password-stdin"]] {
        let out = run_cli(&up_config, args, Some("carol-password-123"));
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let up_creds = std::fs::read_to_string(up_dir.join("demo-credentials.txt")).unwrap();
    let alice_up = up_creds.lines().find_map(|l| l.strip_prefix("alice@contoso.test ")).unwrap().trim().to_string();
    let pw_file = tmp.path().join("upstream.pass");
    std::fs::write(&pw_file, format!("{alice_up}\n")).unwrap();

    let relay_dir = tmp.path().join("relay");
    let upstream = format!("127.0.0.1:{}", up.port("standard-starttls"));
    let ca = up_dir.join("tls/cert.pem");
    let args = [
        "demo", "--data", relay_dir.to_str().unwrap(), "--port-base", "0",
        "--smarthost", &upstream, "--smarthost-ca", ca.to_str().unwrap(),
        "--smarthost-user", "alice@contoso.test", "--smarthost-password-file", pw_file.to_str().unwrap(),
    ];
    let mut relay = Server::start(&args, tmp.path(), &log, 4);
    relay.read_stdout_until("the end of the banner", |l| l.contains("Press Ctrl-C to stop"));
    assert!(relay.stdout.join("\n").contains(&format!("relayed through the smart host {upstream}")), "{:?}", relay.stdout);
    let creds = std::fs::read_to_string(relay_dir.join("demo-credentials.txt")).unwrap();
    let alice = creds.lines().find_map(|l| l.strip_prefix("alice@contoso.test ")).unwrap().trim().to_string();
    let msgid = unique("relayed");
    let r = send(&relay_dir.join("tls/cert.pem"), "starttls", relay.port("standard-starttls"), "alice@contoso.test", &alice, "carol@remote.test", &msgid);
    assert_eq!(r["sent"], true, "alice -> carol@remote.test: {r}");
    wait_for_ids(&up_dir.join("maildir/remote.test/carol/new"), &[msgid], Duration::from_secs(20));
    assert_eq!(relay.terminate(Duration::from_secs(10)).code(), Some(0));
    assert_eq!(up.terminate(Duration::from_secs(10)).code(), Some(0));
}

/// A second `mailgate serve` on a data_dir that a running server uses refuses to start,
/// before it touches anything: the first server's message in the middle of DATA (in
/// spool/incoming) survives and is delivered.
#[test]
fn a_second_server_on_the_same_data_dir_refuses_before_touching_the_spool() {
    let env = Env::with_contoso();
    let server = env.serve();
    let port = server.port("standard-starttls");
    let incoming = env.data().join("spool/incoming");
    let msgid = format!("{}@process.test", unique("inflight"));
    let args = serde_json::json!({"port": port, "cafile": env.cafile, "user": "alice@contoso.test", "password": ALICE_PW,
        "from": "alice@contoso.test", "to": ["scanner@contoso.test"], "msgid": msgid});
    let (_partial, rx, stdin) = py_spawn("partial", &args);
    next_line(&rx, Instant::now() + Duration::from_secs(20)).expect("the client started DATA");
    wait_for("the message in spool/incoming", Duration::from_secs(10), || !dir_entries(&incoming).is_empty());
    let out = env.cli(&["serve"], None);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another mailgate is running on this data_dir"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it never listened");
    assert!(!dir_entries(&incoming).is_empty(), "the first server's message in flight is untouched");
    drop(stdin);
    drop(server);
}

/// `mailgate user list | head`: a printing command whose reader has gone ends quietly
/// (SIGPIPE, as Unix tools do), not with a panic and a backtrace.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let env = Env::with_contoso();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // every write to stdout now fails with EPIPE
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .args(["user", "list"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc_sigpipe()), "ended by SIGPIPE: {:?}", out.status);
}

fn libc_sigpipe() -> i32 {
    13 // SIGPIPE on Linux
}
