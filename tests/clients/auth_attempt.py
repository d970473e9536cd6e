"""One AUTH PLAIN attempt with Python's smtplib from a given local address, as a device
retrying would: connect, STARTTLS, AUTH, quit. Prints the AUTH reply as `CODE TEXT`.

usage: auth_attempt.py HOST PORT CAFILE SOURCE_ADDRESS LOGIN PASSWORD
"""
import smtplib
import ssl
import sys

host, port, cafile, source, login, password = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP(host, int(port), local_hostname="device.test", timeout=30, source_address=(source, 0))
s.starttls(context=ctx)
s.ehlo("device.test")
s.user, s.password = login, password
try:
    # AUTH PLAIN only: login() would try the next mechanism after a 535.
    code, text = s.auth("PLAIN", s.auth_plain)
except smtplib.SMTPAuthenticationError as e:
    code, text = e.smtp_code, e.smtp_error
print(code, text.decode() if isinstance(text, bytes) else text)
try:
    s.quit()
except smtplib.SMTPServerDisconnected:
    pass
