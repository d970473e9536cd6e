#!/usr/bin/env bash
# Side-by-side: Mailgate against Postfix (Debian), same machine, same run, same load.
# Both: STARTTLS on 127.0.0.1, RSA-2048 self-signed certificate, SASL AUTH PLAIN,
# durable queueing, delivery into a Maildir. Scenarios (each alternates Postfix, Mailgate):
#   a  64 clients, TLS 1.3, 10 KB, one message per session
#   b  as a, TLS 1.2
#   c  as a, TLS 1.0 (Mailgate's legacy endpoint; a Postfix listener allowing TLS 1.0)
#   d  as a, ten messages per session
#   e  idle sessions held after EHLO under TLS 1.3: peak memory (PSS) (Mailgate: --idle N,
#      default 10000, 2000 with --quick; Postfix holds at most default_process_limit = 300 sessions, one smtpd process
#      each, so it is measured at 300 and compared per session)
# Prints a table of ratios and, last, `ratio msgs/s mailgate/postfix = X.XX` (scenario a).
# Usage: bench/compare-postfix.sh [--quick] [--duration D] [--rounds R] [--idle N] [--fs-image]
#   --quick: 6 s per run, one round (finishes within 150 s). Default: 20 s, 2 rounds.
#   --fs-image: put both servers' queues and Maildirs on a fresh ext4 *with a journal*, made in
#     an 8 GiB sparse file under $TMPDIR and loop-mounted for the run (root; unmounted at exit).
#     Use it where the machine's own filesystem is unlike a mail server's: ext4 without a
#     journal skips recently deleted inodes at every file creation, which under a mail queue's
#     churn costs both servers more and more CPU as a run goes on (BENCHMARKS.md, pitfalls).
#     The header says which filesystem the run used.
# Installs postfix, sasl2-bin and libsasl2-modules when missing (as root); writes
# /etc/postfix/sasl/smtpd.conf (Cyrus reads only that path) and removes it if it made it.
# Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
D=20; ROUNDS=2; C=64; IDLE=10000; HOLD=30; FS_IMAGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) D=6; ROUNDS=1; HOLD=10; IDLE=2000; shift;; --duration) D=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;;
    --idle) IDLE=$2; shift 2;;
    --fs-image) FS_IMAGE=1; shift;;
    *) echo "usage: $0 [--quick] [--duration D] [--rounds R] [--idle N] [--fs-image]" >&2; exit 2;;
  esac
done
if ! command -v postfix >/dev/null || ! command -v saslpasswd2 >/dev/null; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix sasl2-bin libsasl2-modules >/dev/null
fi
. bench/build.sh
. bench/lib.sh
P=$PWD/bench/proctree.py
mnt=""; image=""
if [ -n "$FS_IMAGE" ]; then
  image=$(mktemp "${TMPDIR:-/tmp}/mailgate-bench-fs.XXXXXX"); mnt=$(mktemp -d)
  truncate -s 8G "$image" && mkfs.ext4 -q -F "$image" && mount -o loop "$image" "$mnt" \
    || { echo "--fs-image: could not make and loop-mount an ext4 image (needs root and loop devices)" >&2; rm -f "$image"; rmdir "$mnt"; exit 1; }
  work=$(TMPDIR=$mnt mktemp -d)
else
  work=$(mktemp -d)
fi
chmod 755 "$work"
mg_pid=""; pf_started=""; sasl_conf=/etc/postfix/sasl/smtpd.conf; made_sasl=""; made_user=""; added_group=""
cleanup() {
  [ -n "$mg_pid" ] && kill "$mg_pid" 2>/dev/null && wait "$mg_pid" 2>/dev/null
  if [ -n "$pf_started" ]; then
    postfix -c "$work/postfix" stop >/dev/null 2>&1
    # postfix stop signals the master and returns: wait for it to be gone.
    for _ in $(seq 1 100); do [ -n "${PF_MASTER:-}" ] && kill -0 "$PF_MASTER" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "$made_sasl" ] && rm -f "$sasl_conf"
  [ -n "$made_user" ] && saslpasswd2 -d -u bench.test load 2>/dev/null
  [ -n "$added_group" ] && deluser postfix sasl >/dev/null 2>&1
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
  if [ -n "$mnt" ] && [ -z "${KEEP_WORK:-}" ]; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
    rmdir "$mnt"; rm -f "$image"
  fi
}
# fs_desc DIR -> "ext4 on /dev/vda, no journal" (jbd2 lists the journaled ext4 devices)
fs_desc() {
  local src type dev
  read -r src type < <(findmnt -no SOURCE,FSTYPE -T "$1")
  dev=$(basename "$src")
  if [ "$type" = ext4 ]; then
    if ls /proc/fs/jbd2 2>/dev/null | grep -q "^$dev-"; then echo "$type on $src, with a journal"; else echo "$type on $src, no journal"; fi
  else
    echo "$type on $src"
  fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 2>/dev/null
chmod 644 "$work/key.pem"
PASS=bench-password-1

# ---- Postfix ------------------------------------------------------------------------
pf=$work/postfix; mkdir -p "$pf" "$work/pf-mail"; chown 65534:65534 "$work/pf-mail"
PF_PORT=$(free_port); PF_LEGACY=$(free_port)
cat > "$pf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/pf-queue
data_directory = $work/pf-data
mail_owner = postfix
myhostname = bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $work/postfix.log
maillog_file_prefixes = $work
smtpd_tls_cert_file = $work/cert.pem
smtpd_tls_key_file = $work/key.pem
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_sasl_auth_enable = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $work/pf-mail
virtual_mailbox_maps = static:bench/Maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
default_process_limit = 300
CF
cat > "$pf/master.cf" <<CF
127.0.0.1:$PF_PORT inet n - n - - smtpd
127.0.0.1:$PF_LEGACY inet n - n - - smtpd -o smtpd_tls_protocols=>=TLSv1 -o smtpd_tls_mandatory_protocols=>=TLSv1 -o tls_high_cipherlist=DEFAULT:@SECLEVEL=0 -o smtpd_tls_mandatory_ciphers=high
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
CF
if [ ! -f "$sasl_conf" ]; then
  mkdir -p "$(dirname "$sasl_conf")"
  printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n' > "$sasl_conf"
  made_sasl=1
else
  echo "note: using the existing $sasl_conf" >&2
fi
# Cyrus here opens the default /etc/sasldb2 whatever sasldb_path says; Debian's way is
# the user in that file and postfix in group sasl (both undone at exit).
echo "$PASS" | saslpasswd2 -p -c -u bench.test load; made_user=1
if ! id -nG postfix | tr ' ' '\n' | grep -qx sasl; then adduser postfix sasl >/dev/null; added_group=1; fi
mkdir -p "$work/pf-queue" "$work/pf-data"
script -qec "postfix -c $pf set-permissions create-missing" /dev/null > "$work/postfix-start.txt" 2>&1 || true
# Postfix reports start-up errors only to syslog or a terminal: give it one (script).
script -qec "postfix -c $pf start" /dev/null > "$work/postfix-start.txt" 2>&1 || { cat "$work/postfix-start.txt"; exit 1; }
pf_started=1
PF_MASTER=""
for _ in $(seq 1 100); do
  PF_MASTER=$(head -1 "$work/pf-queue/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
  [ -n "$PF_MASTER" ] && python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$PF_PORT),1)" 2>/dev/null && break
  sleep 0.1
done
[ -n "$PF_MASTER" ] || { echo "postfix did not start:"; tail -20 "$work/postfix.log" 2>/dev/null; exit 1; }

# ---- Mailgate -----------------------------------------------------------------------
mg=$work/mailgate
mailgate_setup "$M" "$mg" "$work/cert.pem" "$work/key.pem" "$PASS"
$M --config "$mg/mailgate.toml" serve > "$work/mg.out" 2> "$work/mg.err" &
mg_pid=$!
for _ in $(seq 1 100); do [ "$(grep -c listening "$work/mg.out" 2>/dev/null)" = 2 ] && break; sleep 0.1; done
MG_PORT=$(awk '$2=="standard-starttls"{split($3,a,":"); print a[2]}' "$work/mg.out")
MG_LEGACY=$(awk '$2=="legacy-starttls"{split($3,a,":"); print a[2]}' "$work/mg.out")
[ -n "$MG_PORT" ] || { echo "mailgate did not start:"; cat "$work/mg.err"; exit 1; }

# ---- runs ---------------------------------------------------------------------------
# queued SERVER -> messages accepted but not yet delivered into the Maildir
queued() {
  if [ "$1" = postfix ]; then
    find "$work/pf-queue/maildrop" "$work/pf-queue/incoming" "$work/pf-queue/active" "$work/pf-queue/deferred" -type f 2>/dev/null | wc -l
  else
    find "$mg/data/spool/queue" -name '*.msg' 2>/dev/null | wc -l
  fi
}
# run SERVER PORT TLS MESSAGES NAME -> one JSON line (load generator result, seconds to drain the
# queue into the Maildir afterwards, server CPU including that delivery work, peak RSS)
run() {
  local root=$1 port=$2 tls=$3 k=$4 name=$5
  local cpu0 cpu1 mach0 mach1 peak json drained
  cpu0=$(python3 "$P" cpu "$root"); mach0=$(python3 "$P" machine)
  python3 "$P" peak "$root" "$D" 1 > "$work/peak" &
  local sampler=$!
  json=$($L --addr "127.0.0.1:$port" --mode starttls --tls "$tls" -c "$C" --duration "$D" \
    --user load@bench.test --password "$PASS" --to load@bench.test --size 10240 --messages "$k" --json | tail -1)
  drained=$(drain_seconds queued "$name")
  wait "$sampler"; peak=$(cat "$work/peak")
  cpu1=$(python3 "$P" cpu "$root"); mach1=$(python3 "$P" machine)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["cpu_s"]=float(sys.argv[2])-float(sys.argv[3]); r["peak_rss_kib"]=int(sys.argv[4]); r["drain_s"]=float(sys.argv[5]); r["machine_cpu_s"]=float(sys.argv[6])-float(sys.argv[7]); print(json.dumps(r))' \
    "$json" "$cpu1" "$cpu0" "$peak" "$drained" "$mach1" "$mach0"
}
results=$work/results.jsonl; : > "$results"
for round in $(seq 1 "$ROUNDS"); do
  for sc in a b c d; do
    case $sc in a) tls=1.3; k=1;; b) tls=1.2; k=1;; c) tls=1.0; k=1;; d) tls=1.3; k=10;; esac
    pport=$PF_PORT; mport=$MG_PORT
    [ "$sc" = c ] && { pport=$PF_LEGACY; mport=$MG_LEGACY; }
    for server in postfix mailgate; do
      if [ $server = postfix ]; then r=$(run "$PF_MASTER" "$pport" "$tls" "$k" postfix); else r=$(run "$mg_pid" "$mport" "$tls" "$k" mailgate); fi
      echo "{\"scenario\":\"$sc\",\"server\":\"$server\",\"round\":$round,\"r\":$r}" >> "$results"
      python3 -c 'import json,sys; x=json.loads(sys.argv[1]); r=x["r"]; print("  round %s %s %-8s %8.1f msgs/s accepted, queue drained %5.2f s later  errors %s" % (x["round"], x["scenario"], x["server"], r["messages_per_sec"], r["drain_s"], r["errors"] or 0))' "$(tail -1 "$results")"
    done
  done
done
# ---- e: idle sessions -----------------------------------------------------------------
idle() { # root port n -> "peak_rss_kib held"
  local root=$1 port=$2 n=$3 base
  base=$(python3 "$P" rss "$root")
  python3 "$P" peak "$root" $((HOLD + 10)) > "$work/peak" &
  local sampler=$!
  local json
  json=$($L --addr "127.0.0.1:$port" --mode starttls --tls 1.3 -c "$n" --sessions "$n" --handshake-only --hold "$HOLD" --json | tail -1)
  wait "$sampler"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(sys.argv[2], sys.argv[3], r["peak_held"])' "$json" "$(cat "$work/peak")" "$base"
}
read -r pf_peak pf_base pf_held < <(idle "$PF_MASTER" "$PF_PORT" 300)
read -r mg_peak mg_base mg_held < <(idle "$mg_pid" "$MG_PORT" "$IDLE")
echo "{\"idle\": {\"postfix\": [$pf_peak, $pf_base, $pf_held], \"mailgate\": [$mg_peak, $mg_base, $mg_held]}}" > "$work/idle.json"

python3 - "$results" "$D" "$C" "$work/idle.json" "$(fs_desc "$work")" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def agg(sc, server):
    rs = [x["r"] for x in rows if x["scenario"] == sc and x["server"] == server]
    # Delivered, not only accepted: the time to drain the queue into the Maildir counts.
    msgs = sum(r["messages"] for r in rs); secs = sum(r["seconds"] + r.get("drain_s", 0) for r in rs)
    p99 = max(p["p99"] for r in rs for p in r["phases_ms"] if p["phase"] == "session")
    cpu = sum(r["cpu_s"] for r in rs)
    client = sum(r.get("client_cpu_s", 0) for r in rs)
    machine = sum(r.get("machine_cpu_s", 0) for r in rs)
    return {"mps": msgs / secs if secs else 0, "p99": p99, "cpu_per_1000": 1000 * cpu / msgs if msgs else 0,
            "machine_per_1000": 1000 * machine / msgs if msgs else 0,
            "client_per_1000": 1000 * client / msgs if msgs else 0,
            "rss_mb": max(r["peak_rss_kib"] for r in rs) / 1024, "errors": sum(sum(r["errors"].values()) for r in rs)}
names = {"a": "a 64c TLS1.3 10KB", "b": "b 64c TLS1.2 10KB", "c": "c 64c TLS1.0 10KB", "d": "d 10 msgs/session"}
print(f"\nMailgate vs Postfix, {sys.argv[3]} clients, {sys.argv[2]} s per run, same machine (2 cores shared with the load generator)")
print(f"queues and Maildirs on {sys.argv[5]}")
ossl = sorted({x["r"].get("client_openssl", "?") for x in rows if x["scenario"] == "c"})
print(f"load generator's clients: rustls (TLS 1.2/1.3), {', '.join(ossl) or '?'} (TLS 1.0)")
print("msgs/s = messages delivered into the Maildir / (load time + time to drain the queue); CPU includes that delivery work;")
print("load s/1k = the load generator's own CPU per 1000 messages (it runs on the same two cores)")
print(f"{'scenario':<20} {'msgs/s M':>9} {'msgs/s P':>9} {'ratio':>6} {'p99 ms M':>9} {'p99 ms P':>9} {'ratio':>6} {'CPU s/1k M':>10} {'CPU s/1k P':>10} {'load s/1k M/P':>14} {'PSS MB M':>9} {'PSS MB P':>9} {'err M/P':>8}")
for sc in "abcd":
    m, p = agg(sc, "mailgate"), agg(sc, "postfix")
    r1 = m["mps"] / p["mps"] if p["mps"] else float("nan")
    r2 = m["p99"] / p["p99"] if p["p99"] else float("nan")
    print(f"{names[sc]:<20} {m['mps']:9.1f} {p['mps']:9.1f} {r1:6.2f} {m['p99']:9.1f} {p['p99']:9.1f} {r2:6.2f} {m['cpu_per_1000']:10.2f} {p['cpu_per_1000']:10.2f} {m['client_per_1000']:>9.2f}/{p['client_per_1000']:<4.2f} {m['rss_mb']:9.1f} {p['rss_mb']:9.1f} {m['errors']:>4}/{p['errors']:<3}")
# Where the whole machine's CPU goes per delivered message: both servers share two cores with
# the load generator and with the kernel's I/O threads, so msgs/s follows the machine's CPU per
# message, of which the server's own is only a part.
print("machine CPU per 1000 delivered messages, s: server + load generator + rest (kernel I/O threads, interrupts, the harness) = machine")
for sc in "abcd":
    for server, name in (("mailgate", "M"), ("postfix", "P")):
        x = agg(sc, server)
        rest = x["machine_per_1000"] - x["cpu_per_1000"] - x["client_per_1000"]
        print(f"  {sc} {name}: {x['cpu_per_1000']:5.2f} + {x['client_per_1000']:4.2f} + {rest:4.2f} = {x['machine_per_1000']:5.2f}")
ma, pa = agg("a", "mailgate"), agg("a", "postfix")
others = ma["machine_per_1000"] - ma["cpu_per_1000"]
if others > 0 and pa["machine_per_1000"]:
    need = pa["machine_per_1000"] / 3 - others
    print(f"a, the limit: with the rest of the machine's work per message as measured, a Mailgate costing no CPU at all would reach "
          f"{pa['machine_per_1000'] / others:.2f}x Postfix's msgs/s; 3x needs Mailgate's own CPU at most {need:.2f} ms per message (now {ma['cpu_per_1000']:.2f})")
idle = json.load(open(sys.argv[4]))["idle"]
for name, (peak, base, held) in (("mailgate", idle["mailgate"]), ("postfix", idle["postfix"])):
    per = (peak - base) / held if held else float("nan")
    print(f"e idle {name:<8}: {held} sessions held after EHLO under TLS 1.3, peak memory (PSS) {peak / 1024:.1f} MB ({per:.1f} KiB per session above the {base / 1024:.1f} MB at rest)")
# (c) against (a): the load generator's OpenSSL TLS 1.0 client costs far more CPU than its
# rustls TLS 1.3 client, on the same two cores, so msgs/s understates the legacy path; the
# server's CPU per message is the portable comparison.
ma, mc = agg("a", "mailgate"), agg("c", "mailgate")
if ma["mps"] and mc["cpu_per_1000"]:
    print(f"c vs a (Mailgate): msgs/s {100 * mc['mps'] / ma['mps']:.0f} % of a; server CPU per message {100 * mc['cpu_per_1000'] / ma['cpu_per_1000']:.0f} % of a's "
          f"(rate at equal server CPU: {100 * ma['cpu_per_1000'] / mc['cpu_per_1000']:.0f} % of a); load generator CPU per message "
          f"{mc['client_per_1000']:.2f} ms in c against {ma['client_per_1000']:.2f} ms in a")
m, p = agg("a", "mailgate"), agg("a", "postfix")
print(f"ratio msgs/s mailgate/postfix = {m['mps'] / p['mps']:.2f}" if p["mps"] else "ratio msgs/s mailgate/postfix = nan")
PY
