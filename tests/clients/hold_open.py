"""A TLS 1.0 device that is refused at AUTH and keeps its connection open.

usage: hold_open.py PORT USER PASSWORD
STARTTLS on 127.0.0.1:PORT pinned to TLS 1.0 (no certificate check), EHLO, AUTH PLAIN;
prints the AUTH reply, then waits for a line on stdin, sends NOOP on the same connection,
prints that reply and quits.
"""
import smtplib
import ssl
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
port, user, password = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
s = smtplib.SMTP("127.0.0.1", int(port), local_hostname="printer-hold.fabrikam.lan", timeout=60)
s.starttls(context=ctx)
s.ehlo("printer-hold.fabrikam.lan")
s.user, s.password = user, password
try:
    code, text = s.auth("PLAIN", s.auth_plain)
except smtplib.SMTPAuthenticationError as e:
    code, text = e.smtp_code, e.smtp_error
print(code, text.decode(), s.sock.version(), flush=True)
sys.stdin.readline()
code, text = s.noop()
print(code, text.decode(), flush=True)
s.quit()
