//! The smart-host target: relays a message to an upstream SMTP server (a provider's
//! submission service such as Microsoft 365 or Google Workspace, or the organisation's
//! relay) over TLS, authenticated by password or by an OAuth2 bearer token.
//!
//! One transaction is one connection (RFC 5321 §3):
//!
//! 1. TCP connect (`connect_timeout`), then either TLS from the first byte (RFC 8314 §3.3,
//!    port 465) or the greeting, `EHLO`, `STARTTLS` and the handshake (RFC 3207, port 587).
//!    A server that does not offer STARTTLS gets no mail: there is no clear-text fallback,
//!    and bytes the server sent after its `220` to STARTTLS are refused (RFC 3207 §6).
//! 2. TLS 1.2 or 1.3 only (RFC 8996 retired the older versions); the certificate is
//!    verified against the system roots, or only against `ca_file` when set, for the
//!    configured host name (or IP address); with `pin_sha256`, exactly the certificate
//!    with that SHA-256 is accepted instead (the handshake signature is still checked).
//! 3. `EHLO` again (RFC 3207 §4.2), then AUTH (RFC 4954): PLAIN (RFC 4616) or, when
//!    PLAIN is not offered, LOGIN for a password; XOAUTH2 for a bearer token (Google's
//!    "OAuth 2.0 Mechanism" and Microsoft's "Authenticate an IMAP, POP or SMTP connection
//!    using OAuth" describe it: `base64("user=" user ^A "auth=Bearer " token ^A ^A)`; a
//!    refused token gets a `334` with a JSON error, answered by an empty line, then 535).
//! 4. `MAIL FROM` (with `SIZE=`, RFC 1870, and `BODY=8BITMIME`, RFC 6152, when
//!    announced), one `RCPT TO` per recipient, `DATA` and the dot-stuffed content, and only
//!    at [`Transaction::commit`] the final `.`, whose one reply applies to every recipient;
//!    then `QUIT`.
//!
//! Every problem with the connection, TLS or authentication is a temporary failure that
//! names the smart host: an operator fixes a password, a certificate or a token endpoint,
//! and the queued mail then goes out, rather than bouncing. Only the server's replies to
//! MAIL, RCPT, DATA and `.` can be permanent (RFC 5321 §4.2.1: 5yz). Secrets (passwords,
//! tokens) are never logged.

use super::oauth2::TokenSource;
use super::tls_client::{client_config, load_ca_file, provider, system_roots, VERSIONS};
use super::wire::{Conn, Reply, WireError};
use super::{Content, Failure, FailureKind, MessageInfo, Target, Transaction};
use crate::config::delivery::{Secret, Smarthost, SmarthostAuth, SmarthostTls};
use crate::clock::Clock;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long `QUIT` (and the TLS close) may take after the real work is done.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = TlsStream<TcpStream>;

/// Relays to one configured smart host.
pub struct SmarthostTarget {
    config: Smarthost,
    helo_name: String,
    /// For XOAUTH2: the token supply, shared by all transactions to this smart host.
    tokens: Option<TokenSource>,
}

impl SmarthostTarget {
    /// `helo_name` is sent in EHLO (our host name); `clock` decides when OAuth2 tokens expire.
    pub fn new(config: &Smarthost, helo_name: &str, clock: Clock) -> SmarthostTarget {
        let tokens = match &config.auth {
            SmarthostAuth::Xoauth2 { oauth2, .. } => Some(TokenSource::new(oauth2, clock)),
            _ => None,
        };
        SmarthostTarget { config: config.clone(), helo_name: helo_name.to_string(), tokens }
    }

    /// `host:port`, `[v6]:port` for an IPv6 address.
    fn remote(&self) -> String {
        if self.config.host.contains(':') {
            format!("[{}]:{}", self.config.host, self.config.port)
        } else {
            format!("{}:{}", self.config.host, self.config.port)
        }
    }

    /// `smarthost NAME (host:port)`, the subject of every failure sentence.
    fn who(&self) -> String {
        format!("smarthost {} ({})", self.config.name, self.remote())
    }

    /// A temporary failure: `smarthost NAME (host:port) <what>`.
    fn fail(&self, what: impl std::fmt::Display) -> Failure {
        Failure::temporary(format!("{} {what}", self.who())).at(self.remote())
    }

    /// A failure on the wire during `step`.
    fn wire(&self, step: &str, e: WireError) -> Failure {
        wire_failure(&self.who(), &self.remote(), step, e)
    }

    /// Steps 1 to 3: a connection that is encrypted, greeted with EHLO and authenticated.
    async fn open(&self) -> Result<(Conn<Stream>, Reply), Failure> {
        let tls = self.tls_config()?;
        let tcp = self.tcp().await?;
        let (mut conn, ehlo) = match self.config.tls {
            SmarthostTls::Implicit => {
                let mut conn = Conn::new(self.handshake(tcp, tls).await?, self.config.command_timeout);
                self.greeting(&mut conn).await?;
                let ehlo = self.ehlo(&mut conn).await?;
                (conn, ehlo)
            }
            SmarthostTls::Starttls => {
                let tcp = self.starttls(tcp).await?;
                let mut conn = Conn::new(self.handshake(tcp, tls).await?, self.config.command_timeout);
                let ehlo = self.ehlo(&mut conn).await?;
                (conn, ehlo)
            }
        };
        if let Err(f) = self.authenticate(&mut conn, &ehlo).await {
            quit(conn).await;
            return Err(f);
        }
        Ok((conn, ehlo))
    }

    async fn tcp(&self) -> Result<TcpStream, Failure> {
        let (host, port) = (self.config.host.as_str(), self.config.port);
        match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                Ok(tcp)
            }
            Ok(Err(e)) => Err(self.fail(format_args!("cannot be reached: {e}"))),
            Err(_) => Err(self.fail(format_args!("did not accept the connection within {} seconds", self.config.connect_timeout.as_secs()))),
        }
    }

    /// RFC 5321 §4.3.1: the `220` greeting.
    async fn greeting<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, conn: &mut Conn<S>) -> Result<(), Failure> {
        let reply = conn.read_reply().await.map_err(|e| self.wire("the greeting", e))?;
        if reply.code != 220 {
            return Err(self.fail(format_args!("greeted with {}", reply.one_line())));
        }
        Ok(())
    }

    async fn ehlo<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, conn: &mut Conn<S>) -> Result<Reply, Failure> {
        let reply = conn.command(&format!("EHLO {}", self.helo_name)).await.map_err(|e| self.wire("EHLO", e))?;
        if !reply.is_ok() {
            return Err(self.fail(format_args!("refused EHLO: {}", reply.one_line())));
        }
        Ok(reply)
    }

    /// RFC 3207: greeting, EHLO, STARTTLS; the plain stream, ready for the handshake.
    async fn starttls(&self, tcp: TcpStream) -> Result<TcpStream, Failure> {
        let mut conn = Conn::new(tcp, self.config.command_timeout);
        self.greeting(&mut conn).await?;
        let ehlo = self.ehlo(&mut conn).await?;
        if ehlo.extension("STARTTLS").is_none() {
            quit(conn).await;
            return Err(self.fail("does not offer STARTTLS; refusing to send in clear text"));
        }
        let reply = conn.command("STARTTLS").await.map_err(|e| self.wire("STARTTLS", e))?;
        if reply.code != 220 {
            quit(conn).await;
            return Err(self.fail(format_args!("refused STARTTLS: {}; refusing to send in clear text", reply.one_line())));
        }
        conn.into_inner().map_err(|e| self.fail(format_args!("after STARTTLS: {e}")))
    }

    /// The TLS client configuration for this smart host: pinned, `ca_file` or system roots.
    fn tls_config(&self) -> Result<Arc<ClientConfig>, Failure> {
        let config = match (&self.config.pin_sha256, &self.config.ca_file) {
            (Some(pin), _) => pinned_config(*pin),
            (None, Some(ca_file)) => client_config(load_ca_file(ca_file).map_err(|e| self.fail(format_args!("cannot be verified: {e}")))?),
            (None, None) => client_config(system_roots().map_err(|e| self.fail(format_args!("cannot be verified: {e}")))?),
        };
        config.map(Arc::new).map_err(|e| self.fail(format_args!("cannot be set up for TLS: {e}")))
    }

    /// The TLS handshake; SNI and the certificate check use the configured host.
    async fn handshake(&self, tcp: TcpStream, tls: Arc<ClientConfig>) -> Result<Stream, Failure> {
        let name = ServerName::try_from(self.config.host.clone())
            .map_err(|_| self.fail("has a host name that cannot be used for TLS"))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let timeout = self.config.command_timeout;
        let stream = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Failure::temporary(self.tls_problem(&e)).at(self.remote())),
            Err(_) => return Err(self.fail(format_args!("did not complete the TLS handshake within {} seconds", timeout.as_secs()))),
        };
        let (_, session) = stream.get_ref();
        tracing::debug!(
            smarthost = %self.config.name,
            remote = %self.remote(),
            version = ?session.protocol_version(),
            cipher = ?session.negotiated_cipher_suite().map(|s| s.suite()),
            "TLS established with the smart host"
        );
        Ok(stream)
    }

    /// Why a handshake failed, as a sentence.
    fn tls_problem(&self, e: &std::io::Error) -> String {
        use rustls::{AlertDescription, Error as TlsError, PeerIncompatible};
        let (name, remote) = (&self.config.name, self.remote());
        match e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>()) {
            Some(TlsError::InvalidCertificate(problem)) => {
                format!("smarthost {name}: certificate verification failed for {remote}: {}", self.certificate_problem(problem))
            }
            Some(
                TlsError::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13 | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig)
                | TlsError::AlertReceived(AlertDescription::ProtocolVersion),
            ) => format!("smarthost {name}: TLS handshake with {remote} failed: the server offered no TLS 1.2 or 1.3"),
            Some(other) => format!("smarthost {name}: TLS handshake with {remote} failed: {other}"),
            None => format!("smarthost {name}: TLS handshake with {remote} failed: {e}"),
        }
    }

    fn certificate_problem(&self, problem: &CertificateError) -> String {
        let trust = match &self.config.ca_file {
            Some(f) => format!("ca_file {}", f.display()),
            None => "the system's trusted CAs".to_string(),
        };
        match problem {
            CertificateError::UnknownIssuer => format!("UnknownIssuer (not issued by a CA in {trust}; set ca_file or pin_sha256 for a private CA or a self-signed certificate)"),
            CertificateError::BadSignature => format!("BadSignature (its signature does not verify with the CA of that name in {trust})"),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("NotValidForName (the certificate is not valid for {})", self.config.host)
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "Expired".to_string(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "NotValidYet".to_string(),
            CertificateError::Other(other) => other.to_string(),
            other => format!("{other:?}"),
        }
    }

    /// RFC 4954: AUTH as configured; it must be offered once TLS is up.
    async fn authenticate(&self, conn: &mut Conn<Stream>, ehlo: &Reply) -> Result<(), Failure> {
        match &self.config.auth {
            SmarthostAuth::None => Ok(()),
            SmarthostAuth::Password { username, password } => self.auth_password(conn, ehlo, username, password).await,
            SmarthostAuth::Xoauth2 { username, .. } => self.auth_xoauth2(conn, ehlo, username).await,
        }
    }

    /// The mechanisms in the EHLO reply's AUTH line, upper-cased.
    fn mechanisms(&self, ehlo: &Reply, configured: &str) -> Result<Vec<String>, Failure> {
        let offered = ehlo
            .extension("AUTH")
            .ok_or_else(|| self.fail(format_args!("does not offer AUTH after TLS; {configured} authentication is configured")))?;
        Ok(offered.split_ascii_whitespace().map(str::to_ascii_uppercase).collect())
    }

    /// AUTH PLAIN (RFC 4616) if offered, else AUTH LOGIN.
    async fn auth_password(&self, conn: &mut Conn<Stream>, ehlo: &Reply, username: &str, password: &Secret) -> Result<(), Failure> {
        let mechanisms = self.mechanisms(ehlo, "password")?;
        let secret = password.read().map_err(|e| self.fail(format_args!("cannot be logged in to as {username}: {e}")))?;
        let wire = |e| self.wire("AUTH", e);
        let reply = if mechanisms.iter().any(|m| m == "PLAIN") {
            conn.command(&format!("AUTH PLAIN {}", B64.encode(format!("\0{username}\0{secret}")))).await.map_err(wire)?
        } else if mechanisms.iter().any(|m| m == "LOGIN") {
            auth_login(conn, username, &secret).await.map_err(wire)?
        } else {
            return Err(self.fail(format_args!("offers AUTH {} but neither PLAIN nor LOGIN", mechanisms.join(" "))));
        };
        if reply.is_ok() {
            return Ok(());
        }
        Err(self.fail(format_args!(
            "refused the login as {username}: {}; check the password in {}",
            reply.one_line(),
            password.describe()
        )))
    }

    /// AUTH XOAUTH2 with the current token; a refused token is dropped so that the next
    /// attempt fetches a new one.
    async fn auth_xoauth2(&self, conn: &mut Conn<Stream>, ehlo: &Reply, username: &str) -> Result<(), Failure> {
        let mechanisms = self.mechanisms(ehlo, "XOAUTH2")?;
        if !mechanisms.iter().any(|m| m == "XOAUTH2") {
            return Err(self.fail(format_args!("does not offer AUTH XOAUTH2 (it offers {})", mechanisms.join(" "))));
        }
        let tokens = self.tokens.as_ref().ok_or_else(|| self.fail("has no OAuth2 token source"))?;
        let token = tokens.token().await.map_err(|f| Failure { reason: format!("smarthost {}: {}", self.config.name, f.reason), ..f })?;
        let wire = |e| self.wire("AUTH XOAUTH2", e);
        let mut reply = conn.command(&format!("AUTH XOAUTH2 {}", xoauth2_response(username, &token))).await.map_err(wire)?;
        let mut detail = None;
        if reply.code == 334 {
            // The error in JSON (status, schemes, scope); the client answers with an empty line.
            detail = reply.lines.first().and_then(|l| B64.decode(l.trim()).ok()).map(|j| String::from_utf8_lossy(&j).into_owned());
            reply = conn.command("").await.map_err(wire)?;
        }
        if reply.is_ok() {
            return Ok(());
        }
        tokens.invalidate();
        tracing::warn!(
            smarthost = %self.config.name,
            remote = %self.remote(),
            user = %username,
            reply = %reply.one_line(),
            detail = detail.as_deref().unwrap_or(""),
            "the smart host rejected the OAuth2 token; a new one will be fetched at the next attempt"
        );
        Err(self.fail(format_args!(
            "rejected the OAuth2 token: {}; a new token will be fetched at the next attempt",
            reply.one_line()
        )))
    }

    /// Step 4 begins: `MAIL FROM` with the parameters the server announced.
    async fn mail(&self, conn: &mut Conn<Stream>, ehlo: &Reply, message: &MessageInfo) -> Result<(), Failure> {
        check_address(&message.sender)?;
        let mut command = format!("MAIL FROM:<{}>", message.sender);
        if ehlo.extension("SIZE").is_some() {
            command.push_str(&format!(" SIZE={}", message.size));
        }
        if ehlo.extension("8BITMIME").is_some() {
            command.push_str(" BODY=8BITMIME");
        }
        if !message.sender.is_ascii() && ehlo.extension("SMTPUTF8").is_some() {
            command.push_str(" SMTPUTF8");
        }
        let reply = conn.command(&command).await.map_err(|e| self.wire("MAIL FROM", e))?;
        if reply.is_ok() {
            return Ok(());
        }
        let mut failure = Failure::from_reply(&reply, &self.remote());
        // 530: the smart host wants AUTH that is not configured; the operator must act.
        if reply.code == 530 {
            failure.kind = FailureKind::Temporary;
        }
        Err(failure)
    }
}

#[async_trait::async_trait]
impl Target for SmarthostTarget {
    fn destination(&self) -> String {
        format!("smarthost:{}", self.config.name)
    }

    async fn begin(&self, message: &MessageInfo) -> Result<Box<dyn Transaction>, Failure> {
        let (mut conn, ehlo) = self.open().await?;
        if let Err(f) = self.mail(&mut conn, &ehlo, message).await {
            quit(conn).await;
            return Err(f);
        }
        Ok(Box::new(SmarthostTransaction { conn, who: self.who(), remote: self.remote(), accepted: 0, in_data: false }))
    }
}

/// One message on its way to the smart host, between MAIL and the final `.`.
pub struct SmarthostTransaction {
    conn: Conn<Stream>,
    who: String,
    remote: String,
    /// Recipients the server accepted.
    accepted: usize,
    /// DATA was accepted: content may have been sent, so only closing aborts.
    in_data: bool,
}

impl SmarthostTransaction {
    fn wire(&self, step: &str, e: WireError) -> Failure {
        wire_failure(&self.who, &self.remote, step, e)
    }
}

#[async_trait::async_trait]
impl Transaction for SmarthostTransaction {
    async fn rcpt(&mut self, address: &str) -> Result<(), Failure> {
        check_address(address)?;
        let reply = self.conn.command(&format!("RCPT TO:<{address}>")).await.map_err(|e| self.wire("RCPT TO", e))?;
        if !reply.is_ok() {
            return Err(Failure::from_reply(&reply, &self.remote));
        }
        self.accepted += 1;
        Ok(())
    }

    async fn body(&mut self, content: Content<'_>) -> Result<(), Failure> {
        if self.accepted == 0 {
            return Err(Failure::temporary(format!("{}: no recipient was accepted, so there is nothing to send", self.who)));
        }
        let reply = self.conn.command("DATA").await.map_err(|e| self.wire("DATA", e))?;
        if reply.code != 354 {
            return Err(Failure::from_reply(&reply, &self.remote));
        }
        self.in_data = true;
        self.conn.send_stuffed(content).await.map_err(|e| self.wire("sending the message", e))?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Vec<Result<(), Failure>> {
        let result = if !self.in_data {
            Err(Failure::temporary(format!("{}: the message content was not sent", self.who)))
        } else {
            match self.conn.send_end().await {
                Ok(()) => match self.conn.read_reply().await {
                    Ok(reply) if reply.is_ok() => Ok(()),
                    Ok(reply) => Err(Failure::from_reply(&reply, &self.remote)),
                    Err(e) => Err(self.wire("the end of the message", e)),
                },
                Err(e) => Err(self.wire("the end of the message", e)),
            }
        };
        // After a reply (or before DATA) the connection is in step and says goodbye;
        // after a wire error it is just closed.
        let in_step = match &result {
            Ok(()) => true,
            Err(f) => f.is_reply || !self.in_data,
        };
        let accepted = self.accepted;
        if in_step {
            quit(self.conn).await;
        }
        vec![result; accepted]
    }

    async fn abort(self: Box<Self>) {
        // Inside DATA a QUIT would be taken as content: closing the connection without the
        // final `.` is what abandons the message (RFC 5321 §4.1.4).
        if !self.in_data {
            quit(self.conn).await;
        }
    }
}

/// `smarthost NAME (host:port): <step>: <error>`, always temporary.
fn wire_failure(who: &str, remote: &str, step: &str, e: WireError) -> Failure {
    let what = match e {
        WireError::Timeout(s) => format!("no answer to {step} within {s} seconds"),
        WireError::Closed => format!("closed the connection at {step}"),
        other => format!("{step}: {other}"),
    };
    Failure::temporary(format!("{who}: {what}")).at(remote)
}

/// Addresses go between `<` and `>` in a command: nothing that could end it.
fn check_address(address: &str) -> Result<(), Failure> {
    if address.chars().any(|c| c.is_control() || c == '<' || c == '>' || c == ' ') {
        return Err(Failure::permanent(format!("the address {:?} cannot be sent over SMTP", address.escape_debug().to_string())));
    }
    Ok(())
}

/// AUTH LOGIN: user name and password in answer to two 334 prompts; the last reply.
async fn auth_login(conn: &mut Conn<Stream>, username: &str, password: &str) -> Result<Reply, WireError> {
    let reply = conn.command("AUTH LOGIN").await?;
    if reply.code != 334 {
        return Ok(reply);
    }
    let reply = conn.command(&B64.encode(username)).await?;
    if reply.code != 334 {
        return Ok(reply);
    }
    conn.command(&B64.encode(password)).await
}

/// The XOAUTH2 initial client response: `base64("user=" user ^A "auth=Bearer " token ^A ^A)`.
pub fn xoauth2_response(username: &str, token: &str) -> String {
    B64.encode(format!("user={username}\x01auth=Bearer {token}\x01\x01"))
}

/// `QUIT` and a TLS close, best effort and bounded: the work is already done or refused.
async fn quit<S: AsyncRead + AsyncWrite + Unpin + Send>(mut conn: Conn<S>) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, async {
        if conn.command("QUIT").await.is_ok() {
            if let Ok(mut stream) = conn.into_inner() {
                let _ = stream.shutdown().await;
            }
        }
    })
    .await;
}

/// A client configuration accepting exactly the certificate whose SHA-256 is `pin`.
fn pinned_config(pin: [u8; 32]) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate { pin, provider }))
        .with_no_client_auth())
}

/// What can be checked of a smart host without connecting: its `ca_file` parses and holds
/// certificates, and its secrets (password, OAuth2 client secret, refresh token) can be
/// read. For `mailgate check-config`; the error names the file or variable, never a value.
pub fn check_offline(config: &Smarthost) -> Result<(), String> {
    if let Some(ca) = &config.ca_file {
        load_ca_file(ca)?;
    }
    let secrets = match &config.auth {
        SmarthostAuth::None => vec![],
        SmarthostAuth::Password { password, .. } => vec![password],
        SmarthostAuth::Xoauth2 { oauth2, .. } => {
            let mut v: Vec<&crate::config::Secret> = oauth2.client_secret.iter().collect();
            match &oauth2.grant {
                crate::config::OAuth2Grant::RefreshToken(r) => v.push(r),
                crate::config::OAuth2Grant::JwtBearer { key, .. } => v.push(key),
                crate::config::OAuth2Grant::ClientCredentials => {}
            }
            v
        }
    };
    for secret in secrets {
        secret.read()?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The certificate's SHA-256 did not match `pin_sha256`.
#[derive(Debug)]
struct PinMismatch(String);

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the certificate's SHA-256 is {}, not the pinned one (pin_sha256)", self.0)
    }
}

impl std::error::Error for PinMismatch {}

/// Certificate pinning: the pin stands in for the CA chain, host name and validity dates
/// (a pinned self-signed certificate is the use case); the handshake signature is checked
/// as usual, so the server must hold the certificate's private key.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch(hex(&digest));
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(mismatch)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_initial_response() {
        let r = xoauth2_response("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
        // The example of Google's XOAUTH2 documentation.
        assert_eq!(
            r,
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn addresses_cannot_break_out_of_the_command() {
        assert!(check_address("alice@contoso.test").is_ok());
        assert!(check_address("").is_ok());
        for bad in ["a@b>\r\nRCPT TO:<c@d", "a@b> SIZE=1", "a\0@b"] {
            assert!(check_address(bad).unwrap_err().is_permanent());
        }
    }

    #[test]
    fn wire_failures_are_temporary_and_name_the_smarthost() {
        let f = wire_failure("smarthost up (mx.test:587)", "mx.test:587", "EHLO", WireError::Timeout(300));
        assert_eq!(f.reason, "smarthost up (mx.test:587): no answer to EHLO within 300 seconds");
        assert!(!f.is_permanent());
        assert_eq!(f.remote.as_deref(), Some("mx.test:587"));
    }

    #[test]
    fn system_roots_load_and_pins_print_as_hex() {
        assert!(!system_roots().unwrap().is_empty());
        assert_eq!(hex(&[0xab, 0x01]), "ab:01");
    }
}
