"""Send one message file with Python's smtplib. Prints the server's last reply.

usage: smtplib_send.py MODE HOST PORT CAFILE USER PASSWORD FROM TO[,TO...] FILE
MODE is starttls or implicit; the certificate is verified against CAFILE for HOST.
"""
import smtplib
import ssl
import sys

mode, host, port, cafile, user, password, sender, rcpts, path = sys.argv[1:10]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
with open(path, "rb") as f:
    msg = f.read()
if mode == "implicit":
    s = smtplib.SMTP_SSL(host, int(port), local_hostname="client.test", context=ctx, timeout=20)
else:
    s = smtplib.SMTP(host, int(port), local_hostname="client.test", timeout=20)
    s.starttls(context=ctx)
s.login(user, password)
refused = s.sendmail(sender, rcpts.split(","), msg)
print("refused:", refused)
print("tls:", s.sock.version(), s.sock.cipher()[0])
s.quit()
