//! The client side of the SMTP/LMTP wire: commands out, replies in (RFC 5321 §4.2,
//! multi-line replies), dot-stuffed content (RFC 5321 §4.5.2), every read and write under
//! a timeout and every reply line under a length limit. Shared by the LMTP and smart-host
//! targets; protocol decisions (which command when) are theirs.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 sets 512; servers send longer).
const MAX_LINE: usize = 8192;
/// Most lines in one reply (an EHLO reply has one per extension).
const MAX_LINES: usize = 200;

/// A reply: its code and the text of each line (after `NNN-` / `NNN `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 3xx.
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }
    /// The whole reply on one line: `550 5.1.1 text; more text`.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.lines.join("; ")).trim_end().to_string()
    }
    /// The EHLO/LHLO keywords, upper-cased, with their parameters (`AUTH PLAIN LOGIN`).
    pub fn extension(&self, keyword: &str) -> Option<&str> {
        self.lines.iter().skip(1).find_map(|l| {
            let (k, rest) = l.split_once(' ').unwrap_or((l.as_str(), ""));
            k.eq_ignore_ascii_case(keyword).then_some(rest.trim())
        })
    }
}

/// What went wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0} seconds")]
    Timeout(u64),
    #[error("the connection was closed")]
    Closed,
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// A client connection: buffered reads, direct writes, one timeout for each step.
pub struct Conn<S> {
    inner: BufReader<S>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    pub fn new(stream: S, timeout: Duration) -> Conn<S> {
        Conn { inner: BufReader::with_capacity(16 * 1024, stream), timeout }
    }

    /// Reads one reply (all its lines).
    pub async fn read_reply(&mut self) -> Result<Reply, WireError> {
        let timeout = self.timeout;
        let inner = &mut self.inner;
        match tokio::time::timeout(timeout, read_reply(inner)).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout(timeout.as_secs())),
        }
    }

    /// Sends `line` (CRLF added) without reading a reply.
    pub async fn send(&mut self, line: &str) -> Result<(), WireError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let timeout = self.timeout;
        write_timed(self.inner.get_mut(), &bytes, timeout).await
    }

    /// Sends `line` and reads the reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, WireError> {
        self.send(line).await?;
        self.read_reply().await
    }

    /// Sends the content dot-stuffed (RFC 5321 §4.5.2), ending in CRLF, but not the final
    /// `.` line: until [`Conn::send_end`], the server delivers nothing.
    pub async fn send_stuffed(&mut self, content: &mut (dyn AsyncRead + Unpin + Send)) -> Result<u64, WireError> {
        let timeout = self.timeout;
        let w = self.inner.get_mut();
        let mut stuffer = Stuffer::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(66 * 1024);
        let mut total = 0u64;
        loop {
            let n = content.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            out.clear();
            stuffer.push(&buf[..n], &mut out);
            write_timed(w, &out, timeout).await?;
        }
        out.clear();
        stuffer.finish(&mut out);
        write_timed(w, &out, timeout).await?;
        Ok(total)
    }

    /// Sends the end-of-data line `.` (the content must have been sent by `send_stuffed`).
    pub async fn send_end(&mut self) -> Result<(), WireError> {
        self.send(".").await
    }

    /// Sends raw bytes (e.g. a BDAT chunk); no stuffing, no CRLF added.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let timeout = self.timeout;
        write_timed(self.inner.get_mut(), bytes, timeout).await
    }

    /// The stream, for a TLS upgrade after `220` to STARTTLS. Fails if the server sent
    /// anything after that reply: bytes sent before the handshake must not be trusted
    /// inside it (the STARTTLS injection attack, RFC 3207 §6 / CVE-2011-0411).
    pub fn into_inner(self) -> Result<S, WireError> {
        if !self.inner.buffer().is_empty() {
            return Err(WireError::Malformed("data after the STARTTLS reply (possible injection)".into()));
        }
        Ok(self.inner.into_inner())
    }

    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

async fn write_timed<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], timeout: Duration) -> Result<(), WireError> {
    match tokio::time::timeout(timeout, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await
    {
        Ok(r) => Ok(r?),
        Err(_) => Err(WireError::Timeout(timeout.as_secs())),
    }
}

async fn read_reply<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<Reply, WireError> {
    let mut lines = Vec::new();
    let mut code = None;
    loop {
        let mut line = Vec::new();
        let n = (&mut *r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(WireError::Closed);
        }
        if line.len() > MAX_LINE {
            return Err(WireError::Malformed("reply line too long".into()));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (c, sep, rest) = split_line(text).ok_or_else(|| WireError::Malformed(sanitize(text)))?;
        if *code.get_or_insert(c) != c {
            return Err(WireError::Malformed(format!("reply codes differ within one reply: {}", sanitize(text))));
        }
        lines.push(sanitize(rest));
        if lines.len() > MAX_LINES {
            return Err(WireError::Malformed("too many reply lines".into()));
        }
        if sep != '-' {
            return Ok(Reply { code: c, lines });
        }
    }
}

/// `250-text` -> (250, '-', "text"); `250` alone is allowed.
fn split_line(text: &str) -> Option<(u16, char, &str)> {
    let code = text.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&code.as_bytes()[0]) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    match text.as_bytes().get(3) {
        None => Some((code, ' ', "")),
        Some(b'-') => Some((code, '-', &text[4..])),
        Some(b' ') => Some((code, ' ', &text[4..])),
        _ => None,
    }
}

/// Reply text is shown in logs, `queue show` and DSNs: printable ASCII only, bounded.
fn sanitize(s: &str) -> String {
    s.chars().take(1000).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Dot-stuffing across chunk boundaries: a `.` at the start of a line becomes `..`.
#[derive(Default)]
struct Stuffer {
    /// The last two bytes seen (to know whether we are at a line start and whether the
    /// content ended with CRLF).
    last: [u8; 2],
    seen: bool,
}

impl Stuffer {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        for &b in chunk {
            let at_line_start = !self.seen || self.last[1] == b'\n';
            if b == b'.' && at_line_start {
                out.push(b'.');
            }
            out.push(b);
            self.last = [self.last[1], b];
            self.seen = true;
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.seen && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Stuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_dots_across_chunks_and_ends_with_crlf() {
        assert_eq!(stuff(&[b".a\r\n.", b"b\r\nc."]), b"..a\r\n..b\r\nc.\r\n");
        assert_eq!(stuff(&[b"x\r\n", b".\r\n"]), b"x\r\n..\r\n");
        assert_eq!(stuff(&[b""]), b"");
    }

    #[tokio::test]
    async fn reads_multiline_replies_and_rejects_garbage() {
        let input: &[u8] = b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 100\r\n550 5.1.1 no\r\nhello\r\n";
        let mut r = BufReader::new(input);
        let ehlo = read_reply(&mut r).await.unwrap();
        assert_eq!(ehlo.code, 250);
        assert_eq!(ehlo.extension("auth"), Some("PLAIN LOGIN"));
        assert_eq!(ehlo.extension("size"), Some("100"));
        assert_eq!(read_reply(&mut r).await.unwrap().one_line(), "550 5.1.1 no");
        assert!(matches!(read_reply(&mut r).await, Err(WireError::Malformed(_))));
        let mixed: &[u8] = b"250-a\r\n251 b\r\n";
        assert!(matches!(read_reply(&mut BufReader::new(mixed)).await, Err(WireError::Malformed(_))));
        let empty: &[u8] = b"";
        assert!(matches!(read_reply(&mut BufReader::new(empty)).await, Err(WireError::Closed)));
    }
}
