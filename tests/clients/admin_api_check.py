"""Drives a running Mailgate's admin API with urllib (a client we did not write), the SMTP
endpoints with smtplib (through legacy_client.py), and checks /metrics with promtool.

usage: admin_api_check.py SETTINGS.json
  SETTINGS: {"admin": "127.0.0.1:P", "standard": P, "legacy": P, "operator_key": "mgk_...",
             "operator_id": "...", "mailgate": BIN, "config": PATH, "cafile": PATH, "dir": TMP}

Exits non-zero with a message naming the first check that failed; prints "ok" at the end.
"""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

S = json.load(open(sys.argv[1]))
BASE = "http://" + S["admin"]
HERE = os.path.dirname(os.path.abspath(__file__))
OP = S["operator_key"]
# Every change this script makes through the API: (actor, action, object), in order.
CHANGES = []


def fail(msg):
    sys.exit("admin API check failed: " + msg)


def call(method, path, key=None, body=None, raw=None, ctype="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        status = e.code
    try:
        value = json.loads(text) if text else None
    except ValueError:
        value = text
    if status >= 400 and not (isinstance(value, dict) and "error" in value and "message" in value["error"]):
        fail(f"{method} {path}: error {status} without a JSON error body: {text!r}")
    return status, value


def expect(status, method, path, key=None, body=None, **kw):
    got, value = call(method, path, key, body, **kw)
    if got != status:
        fail(f"{method} {path}: expected {status}, got {got}: {value}")
    return value


def change(actor, action, obj):
    CHANGES.append((actor, action, obj))


def smtp(*args):
    out = subprocess.run([sys.executable, os.path.join(HERE, "legacy_client.py"), *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        fail(f"legacy_client.py {args[0]}: {out.stderr}")
    return json.loads(out.stdout)


def metrics():
    text = expect(200, "GET", "/metrics", OP)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"promtool check metrics: {check.stdout}{check.stderr}")
    return text


def wait_metric(name, value):
    """Polls /metrics until `name` has `value` (a connection is counted when it ends)."""
    import time
    deadline = time.monotonic() + 20
    while True:
        text = metrics()
        if metric(text, name) == value:
            return text
        if time.monotonic() > deadline:
            fail(f"{name} is {metric(text, name)}, expected {value}")
        time.sleep(0.05)


def metric(text, line_start):
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


op_actor = "key:" + S["operator_id"]
msg = os.path.join(S["dir"], "msg.eml")
with open(msg, "w") as f:
    f.write("From: printer@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: scan\r\n\r\nscan attached\r\n")

# ---- authentication --------------------------------------------------------------------
expect(401, "GET", "/api/v1/tenants")
expect(401, "GET", "/api/v1/tenants", "mgk_aaaaaaaaaaaa_" + "b" * 32)
expect(401, "GET", "/api/v1/tenants", "not-a-key")
expect(200, "GET", "/api/v1/openapi.json")

# ---- the operator sets up two tenants through the API ------------------------------------
for t in ("contoso", "fabrikam"):
    expect(201, "POST", "/api/v1/tenants", OP, {"name": t})
    change(op_actor, "tenant.add", t)
    expect(201, "POST", "/api/v1/domains", OP, {"name": t + ".test", "tenant": t})
    change(op_actor, "domain.add", t + ".test")
expect(409, "POST", "/api/v1/tenants", OP, {"name": "contoso"})
err = expect(422, "POST", "/api/v1/tenants", OP, {"name": "bad name"})
assert err["error"]["field"] == "name", err
created = expect(201, "POST", "/api/v1/users", OP, {"address": "alice@contoso.test", "password": "alice password 1"})
assert created["password"] is None and created["user"]["tenant"] == "contoso", created
change(op_actor, "user.add", "alice@contoso.test")

# Tenant admins' keys, made by the operator through the API.
keys = {}
for t in ("contoso", "fabrikam"):
    k = expect(201, "POST", "/api/v1/apikeys", OP, {"tenant": t, "description": t + " admin"})
    keys[t] = k
    change(op_actor, "apikey.add", k["key"]["id"])
CO, FA = keys["contoso"]["secret"], keys["fabrikam"]["secret"]
co_actor, fa_actor = "key:" + keys["contoso"]["key"]["id"], "key:" + keys["fabrikam"]["key"]["id"]

# fabrikam's admin adds its printer (password generated, shown once) and reads it back.
made = expect(201, "POST", "/api/v1/users", FA, {"address": "printer@fabrikam.test"})
change(fa_actor, "user.add", "printer@fabrikam.test")
printer_pw = made["password"]
assert printer_pw and len(printer_pw) >= 16, made
assert expect(200, "GET", "/api/v1/users/printer@fabrikam.test", FA)["smtp_auth"] is True

# ---- the user created through the API authenticates over SMTP ---------------------------
sent = smtp("send", "starttls", str(S["standard"]), "1.2", "-", S["cafile"], "printer@fabrikam.test", printer_pw,
            "printer@fabrikam.test", "alice@contoso.test", msg)
if sent.get("auth") != [235, ""] or not sent.get("sent"):
    fail(f"the API-made user could not send over SMTP: {sent}")

# ---- legacy opt-in through the API: served over TLS 1.0, then refused with 534 ----------
err = expect(422, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"allowed": True, "until": "2020-01-01"})
assert err["error"]["field"] == "until", err
err = expect(422, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"networks": ["10.0.0.0/8", "not-a-net"]})
assert err["error"]["field"] == "networks[1]", err
expect(422, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"allowed": "yes"})
expect(422, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"allowed": True, "colour": "blue"})
expect(400, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, raw=b'{"allowed": tru')
expect(415, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, raw=b'allowed=true', ctype="application/x-www-form-urlencoded")
expect(413, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, raw=b'{"users": ["' + b"a" * 200000 + b'"]}')
expect(403, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"forbidden": False})
assert expect(200, "GET", "/api/v1/tenants/fabrikam/legacy", FA)["allowed"] is False, "refused changes changed nothing"

on = expect(200, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"allowed": True, "until": "2099-12-31"})
change(fa_actor, "tenant.legacy", "fabrikam")
assert on["allowed"] and on["until"] == "2099-12-31", on
sent = smtp("send", "starttls", str(S["legacy"]), "1.0", "1.0", "-", "printer@fabrikam.test", printer_pw,
            "printer@fabrikam.test", "alice@contoso.test", msg)
if sent.get("version") != "TLSv1" or not sent.get("sent"):
    fail(f"TLS 1.0 with the opt-in on was not served: {sent}")
expect(200, "PATCH", "/api/v1/tenants/fabrikam/legacy", FA, {"allowed": False})
change(fa_actor, "tenant.legacy", "fabrikam")
sent = smtp("send", "starttls", str(S["legacy"]), "1.0", "1.0", "-", "printer@fabrikam.test", printer_pw,
            "printer@fabrikam.test", "alice@contoso.test", msg)
if sent.get("auth", [0])[0] != 534:
    fail(f"TLS 1.0 with the opt-in off did not get 534: {sent}")

# ---- metrics move with sessions ---------------------------------------------------------
before = metrics()
probe = smtp("probe", "starttls", str(S["standard"]), "1.0", "1.0")
if "421 4.7.66" not in probe.get("first", ""):
    fail(f"TLS 1.0 on the standard endpoint was not answered 421 4.7.66: {probe}")
key421 = 'mailgate_legacy_tls_sessions_total{endpoint="standard-starttls",outcome="explained_421",tenant=""}'
after = wait_metric(key421, metric(before, key421) + 1)
key534 = 'mailgate_legacy_tls_sessions_total{endpoint="legacy-starttls",outcome="not_opted_in",tenant="fabrikam"}'
after = wait_metric(key534, 1)
if metric(after, 'mailgate_auth_total{result="success"}') < 2:
    fail("mailgate_auth_total{result=success} did not count the logins")
if metric(after, 'mailgate_messages_accepted_total{endpoint="standard-starttls"}') != 1:
    fail("mailgate_messages_accepted_total did not count the one message on standard-starttls")
expect(403, "GET", "/metrics", CO)
expect(401, "GET", "/metrics")

# ---- fabrikam's queued message (contoso's LMTP is down: it waits) -----------------------
queue = expect(200, "GET", "/api/v1/queue?tenant=fabrikam", OP)
if not queue:
    fail("no queued fabrikam message to test isolation with")
qid = queue[0]["id"]

# ---- bans: the operator's; a bad target or duration names its field ---------------------
ban = expect(201, "POST", "/api/v1/bans", OP, {"kind": "address", "target": "192.0.2.7", "duration": "2h", "reason": "test"})
change(op_actor, "ban.add", "192.0.2.7/32")
if ban["target"] != "192.0.2.7/32" or ban["expires_at"] - ban["created_at"] != 7200:
    fail(f"POST /api/v1/bans made {ban}")
for body, field in (({"kind": "address", "target": "192.0.2.300"}, "target"), ({"kind": "login", "target": "x", "duration": "1w"}, "duration"), ({"kind": "host", "target": "x"}, "kind")):
    err = expect(422, "POST", "/api/v1/bans", OP, body)
    if err["error"].get("field") != field:
        fail(f"POST /api/v1/bans {body}: expected the field {field}, got {err}")
if [b["id"] for b in expect(200, "GET", "/api/v1/bans", OP)] != [ban["id"]]:
    fail("GET /api/v1/bans does not list the ban just made")
ban_id = str(ban["id"])

# ---- tenant isolation: every route, contoso's key against fabrikam's objects -------------
def snapshot():
    return {
        "tenant": expect(200, "GET", "/api/v1/tenants/fabrikam", OP),
        "users": expect(200, "GET", "/api/v1/users?tenant=fabrikam", OP),
        "queue": [(e["id"], e["held"], [r["status"] for r in e["recipients"]]) for e in expect(200, "GET", "/api/v1/queue?tenant=fabrikam", OP)],
        "keys": [(k["id"], k["revoked_at"]) for k in expect(200, "GET", "/api/v1/apikeys?tenant=fabrikam", OP)],
        "audit": len(expect(200, "GET", "/api/v1/audit?tenant=fabrikam&limit=10000", OP)),
        "bans": expect(200, "GET", "/api/v1/bans", OP),
    }

fk = keys["fabrikam"]["key"]["id"]
P = "printer@fabrikam.test"
# "METHOD path-template": (concrete path, body, expected status)
CASES = {
    "GET /api/v1/openapi.json": None,  # public, holds no tenant's objects
    "GET /metrics": ("/metrics", None, 403),
    "GET /api/v1/tenants": ("/api/v1/tenants", None, "own"),
    "POST /api/v1/tenants": ("/api/v1/tenants", {"name": "fabrikam2"}, 403),
    "GET /api/v1/tenants/{tenant}": ("/api/v1/tenants/fabrikam", None, 404),
    "GET /api/v1/tenants/{tenant}/legacy": ("/api/v1/tenants/fabrikam/legacy", None, 404),
    "PATCH /api/v1/tenants/{tenant}/legacy": ("/api/v1/tenants/fabrikam/legacy", {"allowed": True}, 404),
    "GET /api/v1/domains": ("/api/v1/domains?tenant=fabrikam", None, 404),
    "POST /api/v1/domains": ("/api/v1/domains", {"name": "more.fabrikam.test", "tenant": "fabrikam"}, 403),
    "GET /api/v1/users": ("/api/v1/users?tenant=fabrikam", None, 404),
    "POST /api/v1/users": ("/api/v1/users", {"address": "x@fabrikam.test", "password": "long enough 1"}, 404),
    "GET /api/v1/users/{address}": ("/api/v1/users/" + P, None, 404),
    "PATCH /api/v1/users/{address}": ("/api/v1/users/" + P, {"smtp_auth": False}, 404),
    "POST /api/v1/users/{address}/password": ("/api/v1/users/" + P + "/password", {"password": "taken over 1"}, 404),
    "GET /api/v1/reports/tls": ("/api/v1/reports/tls?tenant=fabrikam", None, 404),
    "GET /api/v1/reports/legacy": ("/api/v1/reports/legacy?tenant=fabrikam", None, 404),
    "GET /api/v1/reports/what-if": ("/api/v1/reports/what-if?tenant=fabrikam&disable_legacy=true", None, 404),
    "GET /api/v1/queue": ("/api/v1/queue?tenant=fabrikam", None, 404),
    "GET /api/v1/queue/{id}": ("/api/v1/queue/" + qid, None, 404),
    "DELETE /api/v1/queue/{id}": ("/api/v1/queue/" + qid, None, 404),
    "POST /api/v1/queue/{id}/retry": ("/api/v1/queue/" + qid + "/retry", None, 404),
    "POST /api/v1/queue/{id}/hold": ("/api/v1/queue/" + qid + "/hold", None, 404),
    "POST /api/v1/queue/{id}/release": ("/api/v1/queue/" + qid + "/release", None, 404),
    "POST /api/v1/queue/{id}/bounce": ("/api/v1/queue/" + qid + "/bounce", None, 404),
    "GET /api/v1/apikeys": ("/api/v1/apikeys?tenant=fabrikam", None, 404),
    "POST /api/v1/apikeys": ("/api/v1/apikeys", {"tenant": "fabrikam"}, 404),
    "DELETE /api/v1/apikeys/{id}": ("/api/v1/apikeys/" + fk, None, 404),
    "GET /api/v1/audit": ("/api/v1/audit?tenant=fabrikam", None, 404),
    "GET /api/v1/bans": ("/api/v1/bans", None, 403),
    "POST /api/v1/bans": ("/api/v1/bans", {"kind": "login", "target": P}, 403),
    "DELETE /api/v1/bans/{id}": ("/api/v1/bans/" + ban_id, None, 403),
}
doc = expect(200, "GET", "/api/v1/openapi.json")
routes = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
if routes != set(CASES):
    fail(f"the isolation table and the API's routes differ: untested {sorted(routes - set(CASES))}, stale {sorted(set(CASES) - routes)}")

before = snapshot()
for route, case in CASES.items():
    if case is None:
        continue
    method = route.split()[0]
    path, body, status = case
    if status == "own":
        rows = expect(200, method, path, CO, body)
        if [t["name"] for t in rows] != ["contoso"]:
            fail(f"{route} with contoso's key lists {rows}")
        continue
    got, value = call(method, path, CO, body)
    if got != status:
        fail(f"{route} with contoso's key on fabrikam's object: expected {status}, got {got}: {value}")
    if "fabrikam" in json.dumps(value) and status == 404 and "fabrikam" not in path and "fabrikam" not in json.dumps(body):
        fail(f"{route}: the 404 reveals fabrikam: {value}")
# Lists without a filter hold contoso's rows only.
for path in ("/api/v1/users", "/api/v1/domains", "/api/v1/queue", "/api/v1/apikeys", "/api/v1/audit", "/api/v1/reports/tls", "/api/v1/reports/legacy"):
    text = json.dumps(expect(200, "GET", path, CO))
    if "fabrikam" in text:
        fail(f"GET {path} with contoso's key shows fabrikam's rows: {text[:300]}")
if snapshot() != before:
    fail("a refused request of contoso's admin changed fabrikam's objects")

expect(200, "DELETE", "/api/v1/bans/" + ban_id, OP)
change(op_actor, "ban.remove", "192.0.2.7/32")
expect(404, "DELETE", "/api/v1/bans/" + ban_id, OP)

# ---- keys: revoked and address-bound keys are refused at once ---------------------------
k = expect(201, "POST", "/api/v1/apikeys", CO, {"tenant": "contoso", "allow_ips": ["10.0.0.0/8"]})
change(co_actor, "apikey.add", k["key"]["id"])
expect(401, "GET", "/api/v1/tenants", k["secret"])
k2 = expect(201, "POST", "/api/v1/apikeys", CO, {"tenant": "contoso"})
change(co_actor, "apikey.add", k2["key"]["id"])
expect(200, "GET", "/api/v1/tenants", k2["secret"])
expect(200, "DELETE", "/api/v1/apikeys/" + k2["key"]["id"], CO)
change(co_actor, "apikey.revoke", k2["key"]["id"])
expect(401, "GET", "/api/v1/tenants", k2["secret"])
expect(403, "POST", "/api/v1/apikeys", CO, {"operator": True})
expect(422, "POST", "/api/v1/apikeys", CO, {"tenant": "contoso", "expires": "2001-01-01"})

# ---- the CLI and the API change the same tenant at once: both land, one record each ------
cli = subprocess.Popen([S["mailgate"], "--config", S["config"], "tenant", "set", "contoso", "--legacy-networks", "192.0.2.0/24"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
expect(200, "PATCH", "/api/v1/tenants/contoso/legacy", CO, {"users": ["alice@contoso.test"]})
change(co_actor, "tenant.legacy", "contoso")
out, errs = cli.communicate(timeout=60)
if cli.returncode != 0:
    fail(f"mailgate tenant set: {errs}")
final = expect(200, "GET", "/api/v1/tenants/contoso/legacy", CO)
if final["users"] != ["alice@contoso.test"] or final["networks"] != ["192.0.2.0/24"]:
    fail(f"concurrent changes lost one: {final}")

# ---- the audit log: exactly one record per change, with its actor -----------------------
records = expect(200, "GET", "/api/v1/audit?limit=10000", OP)
ours = [(r["actor"], r["action"], r["object"]) for r in reversed(records) if r["actor"].startswith("key:")]
if ours != CHANGES:
    fail("the audit log's API records differ from the changes made:\n  got      " + repr(ours) + "\n  expected " + repr(CHANGES))
cli_records = [r for r in records if r["actor"].startswith("cli:") and r["action"] == "tenant.legacy"]
if len(cli_records) != 1 or cli_records[0]["after"]["networks"] != ["192.0.2.0/24"]:
    fail(f"the CLI's change is not one audit record: {cli_records}")
mine = expect(200, "GET", "/api/v1/audit", CO)
if any(r["tenant"] != "contoso" for r in mine):
    fail("contoso's admin sees other tenants' audit records")
text = json.dumps(records)
if printer_pw in text or "alice password 1" in text or CO in text:
    fail("a password or a key is in the audit log")
# The opt-in's history is answerable from the log: who turned it on, until when.
history = [r for r in reversed(records) if r["action"] == "tenant.legacy" and r["object"] == "fabrikam"]
if not (history[0]["actor"] == fa_actor and history[0]["after"]["allowed"] and history[0]["after"]["until"] == "2099-12-31"):
    fail(f"the opt-in history is not in the audit log: {history}")

print("ok")
