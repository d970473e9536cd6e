//! Message content as it arrives after DATA or BDAT: end-of-data, dot-unstuffing and
//! line endings.
//!
//! RFC 5321 §4.1.1.4 ends DATA with `<CRLF>.<CRLF>` and nothing else; §4.5.2 removes the
//! leading dot of a stuffed line; §2.3.8 says lines end in CRLF. SMTP smuggling abuses
//! servers that also accept `<LF>.<LF>`, `<LF>.<CRLF>` or `<CR>.<CR>`; here only a real
//! CRLF starts a line, so none of those can end a message or start a second one, and any
//! bare CR or LF is either flagged (the message is then refused) or turned into CRLF.
//! `smtp-proto`'s DataReceiver ends messages correctly too, but cannot report bare line
//! endings or normalize them, which this module must; so the decoder is ours.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after a CRLF (or at the start): a dot here is special.
    LineStart,
    Text,
    /// A CR was seen; what follows decides whether it was a line end.
    Cr,
    /// A dot at the start of a line.
    Dot,
    /// `CRLF . CR`: one LF more ends the data.
    DotCr,
}

/// Decodes message content incrementally.
#[derive(Debug)]
pub struct ContentDecoder {
    state: State,
    /// DATA (dot-stuffed, ends at `CRLF.CRLF`) or BDAT (raw bytes, never ends by itself).
    dot_stuffed: bool,
    normalize: bool,
    bare_seen: bool,
}

impl ContentDecoder {
    /// For DATA content.
    pub fn data(normalize: bool) -> Self {
        Self { state: State::LineStart, dot_stuffed: true, normalize, bare_seen: false }
    }

    /// For BDAT chunks.
    pub fn bdat(normalize: bool) -> Self {
        Self { state: State::LineStart, dot_stuffed: false, normalize, bare_seen: false }
    }

    /// True once a bare CR or LF was seen (also when normalizing).
    pub fn bare_line_ending_seen(&self) -> bool {
        self.bare_seen
    }

    /// Decodes from `input` into `out`. Returns the number of bytes consumed and whether
    /// the end of data was reached (DATA only; the terminator is not copied).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            // Inside a line, everything up to the next CR or LF is copied as it is.
            if self.state == State::Text {
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                out.extend_from_slice(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            if self.step(input[i], out) {
                return (i + 1, true);
            }
            i += 1;
        }
        (input.len(), false)
    }

    /// Flushes a CR left pending at the very end of BDAT content.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == State::Cr {
            self.bare(out, b"\r");
            self.state = State::Text;
        }
    }

    fn bare(&mut self, out: &mut Vec<u8>, original: &[u8]) {
        self.bare_seen = true;
        out.extend_from_slice(if self.normalize { b"\r\n" } else { original });
    }

    /// One byte; true when it completes `CRLF.CRLF`.
    fn step(&mut self, c: u8, out: &mut Vec<u8>) -> bool {
        match self.state {
            State::LineStart if c == b'.' && self.dot_stuffed => self.state = State::Dot,
            State::LineStart | State::Text => self.text(c, out),
            State::Cr => {
                if c == b'\n' {
                    out.extend_from_slice(b"\r\n");
                    self.state = State::LineStart;
                } else {
                    self.bare(out, b"\r");
                    self.state = State::Text;
                    self.text(c, out);
                }
            }
            // RFC 5321 §4.5.2: the first dot of a line is removed.
            State::Dot if c == b'\r' => self.state = State::DotCr,
            State::Dot => {
                self.state = State::Text;
                self.text(c, out);
            }
            State::DotCr if c == b'\n' => return true,
            State::DotCr => {
                self.bare(out, b"\r");
                self.state = State::Text;
                self.text(c, out);
            }
        }
        false
    }

    fn text(&mut self, c: u8, out: &mut Vec<u8>) {
        match c {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.bare(out, b"\n");
                self.state = State::Text;
            }
            _ => {
                out.push(c);
                self.state = State::Text;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bulk copy inside lines gives the same result as feeding one byte at a time,
    /// wherever the input is split (reads end anywhere).
    #[test]
    fn any_split_decodes_like_one_byte_at_a_time() {
        let inputs: [&[u8]; 6] = [
            b"Subject: x\r\n\r\nline one\r\n..dot\r\n.\r\n",
            b"bare\nlf and bare\rcr\r\n.x\r\n\r\n.\r\nafter",
            b"no end yet\r\n.\r",
            b"\r\r\n\n.\n.\r\n",
            b".\r\n",
            b"long line without any line ending at all",
        ];
        for input in inputs {
            for normalize in [false, true] {
                let mut reference = ContentDecoder::data(normalize);
                let mut want = Vec::new();
                let mut want_end = None;
                for (i, &c) in input.iter().enumerate() {
                    if reference.step(c, &mut want) {
                        want_end = Some(i + 1);
                        break;
                    }
                }
                for split in 0..=input.len() {
                    let mut d = ContentDecoder::data(normalize);
                    let mut out = Vec::new();
                    let (n1, done1) = d.decode(&input[..split], &mut out);
                    let end = if done1 {
                        Some(n1)
                    } else {
                        let (n2, done2) = d.decode(&input[split..], &mut out);
                        done2.then_some(split + n2)
                    };
                    assert_eq!((&out, end), (&want, want_end), "input {input:?} split at {split}, normalize {normalize}");
                    assert_eq!(d.bare_line_ending_seen(), reference.bare_line_ending_seen());
                }
            }
        }
    }

    fn run(input: &[u8], normalize: bool) -> (Vec<u8>, usize, bool, bool) {
        let mut d = ContentDecoder::data(normalize);
        let mut out = Vec::new();
        let (n, done) = d.decode(input, &mut out);
        (out, n, done, d.bare_line_ending_seen())
    }

    #[test]
    fn plain_message_and_unstuffing() {
        let (out, n, done, bare) = run(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nNEXT", false);
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert!(done && !bare);
        assert_eq!(n, 30);
    }

    #[test]
    fn empty_message() {
        let (out, n, done, _) = run(b".\r\n", false);
        assert!(done && out.is_empty() && n == 3);
    }

    #[test]
    fn smuggling_vectors_never_end_data() {
        for v in [
            &b"a\r\n\n.\r\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
        ] {
            let (_, n, done, bare) = run(v, false);
            assert!(!done, "{v:?} ended the data");
            assert_eq!(n, v.len());
            assert!(bare, "{v:?} not flagged");
        }
    }

    #[test]
    fn split_across_reads() {
        let input = b"line1\r\n..x\r\n.\r\n";
        for cut in 0..input.len() {
            let mut d = ContentDecoder::data(false);
            let mut out = Vec::new();
            let (n1, done1) = d.decode(&input[..cut], &mut out);
            assert!(!done1 && n1 == cut);
            let (_, done2) = d.decode(&input[cut..], &mut out);
            assert!(done2, "cut at {cut}");
            assert_eq!(out, b"line1\r\n.x\r\n");
        }
    }

    #[test]
    fn normalize_turns_bare_endings_into_crlf() {
        let (out, _, done, bare) = run(b"a\nb\rc\r\n.\r\n", true);
        assert!(done && bare);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn bdat_is_raw_but_checked() {
        let mut d = ContentDecoder::bdat(false);
        let mut out = Vec::new();
        assert_eq!(d.decode(b".\r\n.x\r\n", &mut out), (7, false));
        assert_eq!(out, b".\r\n.x\r\n");
        assert!(!d.bare_line_ending_seen());
        d.decode(b"tail\r", &mut out);
        d.finish(&mut out);
        assert!(d.bare_line_ending_seen());
    }
}
