//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs` call them with libFuzzer's input), in
//! the library so that `tests/fuzz_corpora.rs` replays the committed corpora through the
//! same code under `cargo test`, with no fuzzer installed. Each takes arbitrary bytes and
//! panics only when an invariant breaks: anything a client, a file or a config can hold
//! must get an answer, never a panic.

use crate::session::content::ContentDecoder;

/// The ClientHello parser and the fingerprint made from it.
pub fn client_hello(data: &[u8]) {
    if let Ok(h) = crate::tls::hello::parse_client_hello(data) {
        assert!(!h.fingerprint.is_empty(), "a parsed hello has a fingerprint");
        // The same record parses to the same facts.
        let again = crate::tls::hello::parse_client_hello(data).expect("parses twice");
        assert_eq!((h.fingerprint, h.ciphers), (again.fingerprint, again.ciphers));
    }
}

/// DATA and BDAT decoding: whatever the input, decoding it in two pieces split anywhere
/// gives the same content and ends at the same byte as decoding it whole (a TCP read may
/// end anywhere). The first byte picks the split and the mode.
pub fn content_decoder(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else { return };
    let (bdat, normalize) = (control & 1 == 1, control & 2 == 2);
    let split = if input.is_empty() { 0 } else { (control as usize >> 2) * input.len() / 63 }.min(input.len());
    let new = || if bdat { ContentDecoder::bdat(normalize) } else { ContentDecoder::data(normalize) };
    let whole = decode_all(new(), &[input]);
    let pieces = decode_all(new(), &[&input[..split], &input[split..]]);
    assert_eq!(whole, pieces, "split at {split} of {} (bdat {bdat}, normalize {normalize})", input.len());
    if !normalize {
        // Without normalizing, content never grows: at most the input, CRLF stuffing removed.
        assert!(whole.0.len() <= input.len());
    }
}

/// Decodes `pieces` in turn until the end of data; the content, where it ended (offset in
/// the whole input), and whether a bare line ending was seen.
fn decode_all(mut d: ContentDecoder, pieces: &[&[u8]]) -> (Vec<u8>, Option<usize>, bool) {
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let (used, done) = d.decode(piece, &mut out);
        assert!(used <= piece.len());
        if done {
            return (out, Some(offset + used), d.bare_line_ending_seen());
        }
        offset += piece.len();
    }
    d.finish(&mut out);
    (out, None, d.bare_line_ending_seen())
}

/// The spool journal's segment parser (a file after any crash).
pub fn journal(data: &[u8]) {
    let (records, _torn) = crate::queue::journal::parse(data);
    let total: usize = records.iter().map(|(id, bytes)| id.len() + bytes.len()).sum();
    assert!(total <= data.len(), "records hold more than the segment");
}

/// The queue entry's log fold (a `.log` file as a crash or a hand left it).
pub fn queue_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let recipients = ["a@contoso.test".to_string(), "b@contoso.test".to_string()];
    let _ = crate::queue::state::EntryState::new(&recipients, &text);
}

/// The configuration loader: any text is a configuration or an error naming why.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = crate::config::Config::from_toml(std::path::Path::new("/nonexistent/fuzz.toml"), &text) {
        assert!(!e.to_string().is_empty());
    }
}

/// Seed inputs made with Mailgate's own writers (`fuzz/seeds.sh` adds ClientHellos made by
/// Python's OpenSSL): `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::queue::state::Record;
    let mut out = Vec::new();
    for (i, content) in [&b"Subject: a\r\n\r\nbody\r\n.\r\n"[..], b"..dot\r\n.\r\n", b"bare\nlf\r\n.\r\n", b"cr\r\r\n.\r", b"\r\n.\r\n", b"no end"].iter().enumerate() {
        for control in [0u8, 1, 2, 3, 0x80, 0xfd] {
            out.push(("content_decoder", format!("seed-{i}-{control:02x}"), [&[control][..], content].concat()));
        }
    }
    let mut segment = Vec::new();
    crate::queue::journal::encode_into(&mut segment, "20261203T120000-0001", b"{\"from\":\"a@contoso.test\"}\nbody");
    crate::queue::journal::encode_into(&mut segment, "20261203T120000-0002", b"");
    out.push(("journal", "seed-two-records".into(), segment.clone()));
    out.push(("journal", "seed-torn".into(), segment[..segment.len() - 3].to_vec()));
    let failure = crate::delivery::Failure::permanent("550 5.1.1 no such user");
    let log: String = [
        Record::Deferred { rcpt: "a@contoso.test".into(), at: 10, failure: crate::delivery::Failure::temporary("451 4.3.0 later") },
        Record::Delivered { rcpt: "a@contoso.test".into(), at: 20, to: "maildir".into() },
        Record::Failed { rcpt: "b@contoso.test".into(), at: 30, failure },
        Record::Bounced { rcpts: vec!["b@contoso.test".into()], at: 31, dsn: Some("20261203T120000-0003".into()) },
        Record::Hold { at: 40 },
        Record::Release { at: 41 },
        Record::Retry { at: 42 },
        Record::Bounce { at: 43 },
        Record::Warned { at: 44, dsn: None },
    ]
    .iter()
    .map(Record::line)
    .collect();
    out.push(("queue_log", "seed-all-records".into(), log.into_bytes()));
    out.push(("queue_log", "seed-torn".into(), b"{\"t\":\"delivered\",\"rcpt\":\"a@con".to_vec()));
    out.push(("config", "seed-example".into(), include_bytes!("../mailgate.example.toml").to_vec()));
    out.push(("config", "seed-minimal".into(), b"data_dir = \"d\"\n[[tls.certificate]]\ncert = \"c\"\nkey = \"k\"\n[[endpoint]]\nname = \"e\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"starttls\"\n".to_vec()));
    out
}
