#!/usr/bin/env bash
# Writes the fuzz seed corpora: Mailgate's own writers (journal segments, queue logs,
# message content, configs) through tests/fuzz_corpora.rs, and ClientHello records made by
# Python's OpenSSL for TLS 1.0 to 1.3. Run from anywhere; the files go to fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
MAILGATE_WRITE_SEEDS=1 cargo test --locked --test fuzz_corpora every_seed_is_in_its_corpus -q
mkdir -p fuzz/corpus/client_hello
python3 - <<'PY'
import ssl, warnings
warnings.simplefilter("ignore", DeprecationWarning)
V = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
for lo, hi, sni in [("1.0", "1.0", None), ("1.0", "1.1", "printer.test"), ("1.2", "1.2", "mx.test"), ("1.2", "1.3", "mx.test"), ("1.0", "1.3", None)]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = V[lo], V[hi]
    if lo in ("1.0", "1.1"):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    with open(f"fuzz/corpus/client_hello/python-{lo}-{hi}-{sni or 'nosni'}", "wb") as f:
        f.write(out.read())
PY
ls fuzz/corpus/*/ | head -50
