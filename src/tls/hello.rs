//! Reading and inspecting the ClientHello before any handshake.
//!
//! The first TLS record is read from the socket (with a deadline) and parsed with
//! `tls-parser`: the highest version offered (`supported_versions`, RFC 8446 §4.2.1, else
//! `legacy_version`), the cipher suites, SNI, and a JA4-style fingerprint. The bytes are
//! then replayed to whichever TLS stack serves the connection ([`Prefixed`]). Reading
//! rather than `peek`ing: a partial peek leaves the socket readable and would spin, and a
//! trickling client must meet a deadline either way.
//!
//! JA4 (FoxIO): `t{ver}{d|i}{#ciphers:02}{#extensions:02}{alpn}_{sha256(sorted ciphers)[..12]}
//! _{sha256(sorted extensions without SNI/ALPN "_" signature algorithms)[..12]}`, GREASE
//! values (RFC 8701) ignored.

use super::TlsVersion;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_plaintext, TlsExtension, TlsExtensionType, TlsMessage,
    TlsMessageHandshake,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The largest plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 16384;

/// What a ClientHello offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// The highest version offered.
    pub offered_max: TlsVersion,
    /// Cipher suites, GREASE removed, in the client's order.
    pub ciphers: Vec<u16>,
    pub sni: Option<String>,
    pub fingerprint: String,
    /// The signature_algorithms extension is present (rustls requires it for TLS 1.2).
    pub has_signature_algorithms: bool,
}

/// Why no usable ClientHello was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("no ClientHello within the time limit")]
    Timeout,
    #[error("connection closed before a ClientHello")]
    Closed,
    #[error("an SSLv2 ClientHello")]
    SslV2,
    #[error("not a TLS handshake record")]
    NotTls,
    #[error("record too large for a ClientHello")]
    Oversized,
    /// A TLS handshake record that does not hold a whole ClientHello (split across
    /// records, or malformed). The bytes are still replayed to rustls, which reassembles.
    #[error("ClientHello not parseable from its first record")]
    Unparsed,
}

/// Reads the first TLS record. On `Ok` the bytes read are returned for replay; on
/// `Err(Unparsed)` too (as the second value), so that a split hello can still be served.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> (Vec<u8>, Result<HelloInfo, HelloError>) {
    let mut buf = Vec::with_capacity(1024);
    let result = tokio::time::timeout(timeout, read_record(stream, &mut buf)).await;
    let result = match result {
        Err(_) => Err(HelloError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => parse_client_hello(&buf),
    };
    (buf, result)
}

async fn read_record<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<(), HelloError> {
    fill(stream, buf, 5).await?;
    if buf[0] & 0x80 != 0 && buf.get(2) == Some(&0x01) {
        return Err(HelloError::SslV2);
    }
    if buf[0] != 0x16 || buf[1] != 0x03 {
        return Err(HelloError::NotTls);
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if len > MAX_RECORD {
        return Err(HelloError::Oversized);
    }
    fill(stream, buf, 5 + len).await
}

/// Reads until `buf` holds at least `want` bytes. Each read takes whatever has arrived (up
/// to 4 KiB), so a hello that came in one segment costs one read, not a header read and a
/// body read; bytes beyond the record are replayed with it.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>, want: usize) -> Result<(), HelloError> {
    while buf.len() < want {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|_| HelloError::Closed)?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// RFC 8701 GREASE values: 0x?a?a with equal bytes.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Parses one complete record holding a ClientHello.
pub fn parse_client_hello(record: &[u8]) -> Result<HelloInfo, HelloError> {
    let (_, plain) = parse_tls_plaintext(record).map_err(|_| HelloError::Unparsed)?;
    let hello = plain
        .msg
        .iter()
        .find_map(|m| match m {
            TlsMessage::Handshake(TlsMessageHandshake::ClientHello(h)) => Some(h),
            _ => None,
        })
        .ok_or(HelloError::Unparsed)?;
    let extensions = match hello.ext {
        Some(raw) => parse_tls_client_hello_extensions(raw).map_err(|_| HelloError::Unparsed)?.1,
        None => Vec::new(),
    };
    let mut supported = Vec::new();
    let mut sni = None;
    let mut sigalgs: Vec<u16> = Vec::new();
    let mut alpn: Option<Vec<u8>> = None;
    let mut ext_types = Vec::new();
    for ext in &extensions {
        match ext {
            TlsExtension::SupportedVersions(v) => supported.extend(v.iter().map(|v| v.0).filter(|v| !is_grease(*v))),
            TlsExtension::SNI(names) => sni = names.first().map(|(_, n)| String::from_utf8_lossy(n).into_owned()),
            TlsExtension::SignatureAlgorithms(s) => sigalgs = s.iter().copied().filter(|v| !is_grease(*v)).collect(),
            TlsExtension::ALPN(list) => alpn = list.first().map(|a| a.to_vec()),
            _ => {}
        }
        let t = TlsExtensionType::from(ext).0;
        if !matches!(ext, TlsExtension::Grease(..)) && !is_grease(t) {
            ext_types.push(t);
        }
    }
    let offered = supported.iter().copied().max().unwrap_or(hello.version.0);
    let ciphers: Vec<u16> = hello.ciphers.iter().map(|c| c.0).filter(|c| !is_grease(*c)).collect();
    let offered_max = TlsVersion::from_wire(offered);
    let fingerprint = ja4(offered, sni.is_some(), &ciphers, &ext_types, alpn.as_deref(), &sigalgs);
    Ok(HelloInfo { offered_max, ciphers, sni, fingerprint, has_signature_algorithms: !sigalgs.is_empty() })
}

fn ja4(version: u16, has_sni: bool, ciphers: &[u16], exts: &[u16], alpn: Option<&[u8]>, sigalgs: &[u16]) -> String {
    let ver = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        _ => "00",
    };
    let alpn = match alpn {
        Some(a) if !a.is_empty() => {
            let (f, l) = (a[0] as char, a[a.len() - 1] as char);
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() { format!("{f}{l}") } else { "99".into() }
        }
        _ => "00".into(),
    };
    let a = format!(
        "t{ver}{}{:02}{:02}{alpn}",
        if has_sni { 'd' } else { 'i' },
        ciphers.len().min(99),
        exts.len().min(99)
    );
    let hex = |v: &[u16]| v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",");
    let short = |s: String| -> String {
        if s.is_empty() {
            return "000000000000".into();
        }
        Sha256::digest(s.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect()
    };
    let mut sorted_ciphers = ciphers.to_vec();
    sorted_ciphers.sort_unstable();
    let mut sorted_exts: Vec<u16> = exts.iter().copied().filter(|e| *e != 0x0000 && *e != 0x0010).collect();
    sorted_exts.sort_unstable();
    let c_input = if sigalgs.is_empty() { hex(&sorted_exts) } else { format!("{}_{}", hex(&sorted_exts), hex(sigalgs)) };
    format!("{a}_{}_{}", short(hex(&sorted_ciphers)), short(c_input))
}

/// A stream that first replays bytes already read from it.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    /// Forwarded so that rustls hands a whole flight (ServerHello .. Finished, or a
    /// ticket and the greeting) to the kernel in one writev instead of a send per record.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record built by hand: `version` in the hello, optional
    /// supported_versions, SNI and signature algorithms.
    pub fn hello_record(version: u16, supported: &[u16], ciphers: &[u16], sni: Option<&str>, sigalgs: bool) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            ext.extend_from_slice(&0u16.to_be_bytes());
            ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
            ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
            ext.extend_from_slice(n);
        }
        if sigalgs {
            ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x01, 0x08, 0x04]);
        }
        if !supported.is_empty() {
            ext.extend_from_slice(&[0x00, 0x2b]);
            ext.extend_from_slice(&((supported.len() * 2 + 1) as u16).to_be_bytes());
            ext.push((supported.len() * 2) as u8);
            for v in supported {
                ext.extend_from_slice(&v.to_be_bytes());
            }
        }
        let mut body = Vec::new();
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            body.extend_from_slice(&c.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1u8];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn versions_from_legacy_field_and_supported_versions() {
        let h = parse_client_hello(&hello_record(0x0301, &[], &[0x002f], None, false)).unwrap();
        assert_eq!(h.offered_max, TlsVersion::Tls10);
        assert!(!h.has_signature_algorithms);
        let h = parse_client_hello(&hello_record(0x0303, &[0x3a3a, 0x0304, 0x0303, 0x0301], &[0x1301, 0xc02f], Some("mx.test"), true)).unwrap();
        assert_eq!(h.offered_max, TlsVersion::Tls13);
        assert_eq!(h.sni.as_deref(), Some("mx.test"));
        assert!(h.fingerprint.starts_with("t13d0203"), "{}", h.fingerprint);
        let h = parse_client_hello(&hello_record(0x0300, &[], &[0x002f], None, false)).unwrap();
        assert_eq!(h.offered_max, TlsVersion::Ssl3);
    }

    #[test]
    fn grease_is_ignored_in_the_fingerprint() {
        let a = parse_client_hello(&hello_record(0x0303, &[], &[0x0a0a, 0xc02f, 0xc030], None, true)).unwrap();
        let b = parse_client_hello(&hello_record(0x0303, &[], &[0xc030, 0xc02f], None, true)).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint, "GREASE and order do not change the fingerprint");
        assert_eq!(a.ciphers, vec![0xc02f, 0xc030]);
        assert_eq!(&a.fingerprint[..10], "t12i020100");
    }

    #[tokio::test]
    async fn bad_hellos_are_classified() {
        let cases: Vec<(Vec<u8>, HelloError)> = vec![
            (b"EHLO example.test\r\n".to_vec(), HelloError::NotTls),
            (vec![0x80, 0x2e, 0x01, 0x00, 0x02], HelloError::SslV2),
            (vec![0x16, 0x03, 0x01, 0xff, 0xff], HelloError::Oversized),
            (vec![0x16, 0x03, 0x01, 0x00], HelloError::Closed),
        ];
        for (bytes, want) in cases {
            let mut s = bytes.as_slice();
            let (_, got) = read_client_hello(&mut s, Duration::from_secs(1)).await;
            assert_eq!(got, Err(want));
        }
        // A hello whose handshake message continues in a second record.
        let mut rec = hello_record(0x0303, &[], &[0xc02f], None, true);
        rec[4] -= 10;
        rec.truncate(rec.len() - 10);
        let mut s = rec.as_slice();
        let (bytes, got) = read_client_hello(&mut s, Duration::from_secs(1)).await;
        assert_eq!(got, Err(HelloError::Unparsed));
        assert_eq!(bytes, rec);
    }

    /// Records how many buffers each write was handed.
    struct Recorder(Vec<usize>);
    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.0.push(1);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.0.push(bufs.len());
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn prefixed_passes_vectored_writes_through() {
        use tokio::io::AsyncWriteExt;
        let mut p = Prefixed::new(Vec::new(), Recorder(Vec::new()));
        assert!(p.is_write_vectored(), "rustls writes a flight in one call only to a vectored writer");
        let bufs = [std::io::IoSlice::new(b"server hello"), std::io::IoSlice::new(b"certificate"), std::io::IoSlice::new(b"finished")];
        let n = p.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 31);
        assert_eq!(p.inner.0, vec![3], "one write of three buffers");
    }

    #[tokio::test]
    async fn bytes_read_past_the_hello_are_replayed_with_it() {
        let rec = hello_record(0x0303, &[0x0304], &[0x1301], Some("mx.test"), true);
        let mut bytes = rec.clone();
        bytes.extend_from_slice(b"next record");
        let (mut reader, mut writer) = tokio::io::duplex(8192);
        use tokio::io::AsyncWriteExt;
        writer.write_all(&bytes).await.unwrap();
        let (got, hello) = read_client_hello(&mut reader, Duration::from_secs(1)).await;
        assert_eq!(hello.unwrap().sni.as_deref(), Some("mx.test"));
        assert_eq!(got, bytes, "whatever was read past the record is replayed with it");
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads_on() {
        let inner: &[u8] = b" world";
        let mut p = Prefixed::new(b"hello".to_vec(), inner);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
