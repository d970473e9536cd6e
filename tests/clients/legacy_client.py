"""A TLS client whose versions can be pinned, for the legacy-TLS tests. Prints one JSON object.

usage:
  legacy_client.py probe MODE PORT MIN MAX
      Connects to 127.0.0.1:PORT (MODE starttls: greeting, EHLO, STARTTLS first), does the
      TLS handshake, then reads what the server says first without sending anything
      ("first"), then sends EHLO and an AUTH PLAIN and reports what came back ("after":
      "" when the server had closed the connection).
  legacy_client.py send MODE PORT MIN MAX CAFILE USER PASSWORD FROM TO FILE
      Sends FILE with smtplib. CAFILE "-" means no certificate check.

MIN and MAX are 1.0, 1.1, 1.2, 1.3 or "-" (the library's default). With MIN 1.0 or 1.1 the
cipher list is DEFAULT:@SECLEVEL=0, which OpenSSL 3 needs for TLS 1.0/1.1; otherwise the
library's default context is used as it is.
"""
import base64
import json
import smtplib
import socket
import ssl
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1 is deprecated

VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
HOST = "127.0.0.1"


def context(lo, hi, cafile="-"):
    """CAFILE "-": no certificate check; else the default context verifying against it."""
    if cafile == "-":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=cafile)
    if lo != "-":
        ctx.minimum_version = VERSIONS[lo]
    if hi != "-":
        ctx.maximum_version = VERSIONS[hi]
    if lo in ("1.0", "1.1"):
        # OpenSSL 3 needs security level 0 for TLS 1.0/1.1 (SHA-1 signatures).
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def read_reply(sock):
    """One whole SMTP reply; "" if the connection closed first."""
    data = b""
    while True:
        lines = data.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) < 4 or line[3:4] != b"-":
                return data.decode("utf-8", "replace")
        try:
            chunk = sock.recv(4096)
        except (ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            return data.decode("utf-8", "replace")
        data += chunk


def read_all(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return data.decode("utf-8", "replace") + "<timeout>"
        except (ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            return data.decode("utf-8", "replace")
        data += chunk


def probe(mode, port, lo, hi):
    out = {}
    raw = socket.create_connection((HOST, int(port)), timeout=10)
    if mode == "starttls":
        out["greeting"] = read_reply(raw)
        raw.sendall(b"EHLO client.test\r\n")
        read_reply(raw)
        raw.sendall(b"STARTTLS\r\n")
        out["starttls"] = read_reply(raw)
    try:
        tls = context(lo, hi).wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError) as e:
        out["handshake"] = "failed"
        out["error"] = str(e)
        print(json.dumps(out))
        return
    out["handshake"] = "ok"
    out["version"] = tls.version()
    out["cipher"] = tls.cipher()[0]
    out["first"] = read_reply(tls)
    token = base64.b64encode(b"\0alice@contoso.test\0alice-password-1").decode()
    try:
        tls.sendall(b"EHLO client.test\r\nAUTH PLAIN " + token.encode() + b"\r\n")
        out["after"] = read_all(tls)
    except (ssl.SSLError, OSError) as e:
        out["after"] = ""
        out["after_error"] = str(e)
    print(json.dumps(out))


def send(mode, port, lo, hi, cafile, user, password, sender, rcpt, path):
    with open(path, "rb") as f:
        msg = f.read()
    ctx = context(lo, hi, cafile)
    out = {}
    if mode == "implicit":
        s = smtplib.SMTP_SSL(HOST, int(port), local_hostname="client.test", context=ctx, timeout=20)
    else:
        s = smtplib.SMTP(HOST, int(port), local_hostname="client.test", timeout=20)
        s.starttls(context=ctx)
    out["version"] = s.sock.version()
    out["cipher"] = s.sock.cipher()[0]
    try:
        s.login(user, password)
    except smtplib.SMTPAuthenticationError as e:
        out["auth"] = [e.smtp_code, e.smtp_error.decode("utf-8", "replace")]
        # After a refused AUTH, MAIL must not be accepted either.
        out["mail"] = list(s.docmd("MAIL FROM:<%s>" % sender))
        out["mail"][1] = out["mail"][1].decode("utf-8", "replace")
        print(json.dumps(out))
        return
    out["auth"] = [235, ""]
    out["refused"] = s.sendmail(sender, rcpt.split(","), msg)
    out["sent"] = True
    s.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "probe":
        probe(*args)
    elif cmd == "send":
        send(*args)
    else:
        sys.exit(__doc__)
