#!/usr/bin/env bash
# A/B: two Mailgate builds side by side, same machine, same run, same load, alternated.
# For changes whose effect is a few per cent: the host's speed drifts by more than that
# within minutes, so only builds measured in one run, round by round, compare.
#
# Usage: bench/ab.sh BIN_A BIN_B [--rounds R] [--duration D] [--tls V] [--messages K] [--clients C] [--size S]
#   Defaults: 3 rounds of 15 s, scenario a (STARTTLS, TLS 1.3, 64 clients, 10 KB, 1 message per session).
#   Make BIN_A from an earlier commit, e.g.:
#     git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release --target-dir "$OLDPWD/target/ab-base")
#     bench/ab.sh target/ab-base/release/mailgate target/release/mailgate
#   KEEP_LOGS=DIR keeps both servers' stderr there (A.err, B.err).
#   PERF=1 adds `perf stat` counts of fsync, fdatasync, futex and context switches per message.
# Both servers' data directories (spool and Maildir) are on one fresh ext4 with a journal, in a
# sparse file under $TMPDIR, loop-mounted for the run (needs root); unmounted at exit.
# Prints, per round and build: messages/s accepted, messages/s delivered (load time + time to
# drain the queue), server and machine CPU per message, session p50/p99, ext4 journal commits
# per message; then the mean of B against A. Builds the load generator with bench/build.sh.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 6,12p "$0" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); shift 2
cd "$(dirname "$0")/.."
ROUNDS=3; D=15; TLS=1.3; K=1; C=64; SIZE=10240
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2;; --duration) D=$2; shift 2;; --tls) TLS=$2; shift 2;;
    --messages) K=$2; shift 2;; --clients) C=$2; shift 2;; --size) SIZE=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
. bench/build.sh
. bench/lib.sh
P=$PWD/bench/proctree.py
image=$(mktemp "${TMPDIR:-/tmp}/mailgate-ab-fs.XXXXXX"); mnt=$(mktemp -d)
truncate -s 8G "$image" && mkfs.ext4 -q -F "$image" && mount -o loop "$image" "$mnt" \
  || { echo "could not make and loop-mount an ext4 image (needs root and loop devices)" >&2; rm -f "$image"; rmdir "$mnt"; exit 1; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; for n in A B; do cp "$mnt/$n/err" "$KEEP_LOGS/$n.err" 2>/dev/null; done; fi
  umount "$mnt" 2>/dev/null || umount -l "$mnt"
  rmdir "$mnt"; rm -f "$image"
}
trap cleanup EXIT
dev=$(basename "$(findmnt -no SOURCE "$mnt")")
jbd2=$(ls -d /proc/fs/jbd2/"$dev"-* | head -1)
commits() { awk 'NR==1{print $1}' "$jbd2/info"; }
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$mnt/key.pem" -out "$mnt/cert.pem" -days 2 2>/dev/null
PASS=bench-password-1

# start NAME BIN -> sets PORT_<NAME> and PID_<NAME>
start() {
  local name=$1 bin=$2 dir=$mnt/$1
  mailgate_setup "$bin" "$dir" "$mnt/cert.pem" "$mnt/key.pem" "$PASS"
  "$bin" --config "$dir/mailgate.toml" serve > "$dir/out" 2> "$dir/err" &
  local pid=$!; pids+=("$pid")
  for _ in $(seq 1 100); do [ "$(grep -c listening "$dir/out" 2>/dev/null)" = 2 ] && break; sleep 0.1; done
  # TLS 1.0/1.1 only on the legacy endpoint (scenario c); the rest on the standard one.
  local endpoint=standard-starttls; case $TLS in 1.0|1.1) endpoint=legacy-starttls;; esac
  local port; port=$(awk -v e="$endpoint" '$2==e{split($3,a,":"); print a[2]}' "$dir/out")
  [ -n "$port" ] || { echo "$name did not start:"; cat "$dir/err"; exit 1; }
  printf -v "PORT_$name" %s "$port"; printf -v "PID_$name" %s "$pid"
}
start A "$A"; start B "$B"
queued() { find "$mnt/$1/data/spool/queue" -name '*.msg' 2>/dev/null | wc -l; }
# run NAME -> one JSON line
run() {
  local name=$1 pidvar=PID_$1 portvar=PORT_$1
  local pid=${!pidvar} port=${!portvar} cpu0 cpu1 mach0 mach1 j0 j1 json drained perfpid="" perfout=$mnt/perf.$1
  sync; sleep 1   # the previous run's writeback, not this run's
  cpu0=$(python3 "$P" cpu "$pid"); mach0=$(python3 "$P" machine); j0=$(commits)
  if [ -n "${PERF:-}" ]; then
    perf stat -x, -e 'syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_futex,context-switches' \
      -p "$pid" -o "$perfout" & perfpid=$!
  fi
  json=$($L --addr "127.0.0.1:$port" --mode starttls --tls "$TLS" -c "$C" --duration "$D" \
    --user load@bench.test --password "$PASS" --to load@bench.test --size "$SIZE" --messages "$K" --json | tail -1)
  drained=$(drain_seconds queued "$name")
  cpu1=$(python3 "$P" cpu "$pid"); mach1=$(python3 "$P" machine); j1=$(commits)
  local perf="{}"
  if [ -n "$perfpid" ]; then
    kill -INT "$perfpid"; wait "$perfpid" 2>/dev/null || true
    perf=$(python3 -c 'import csv,json,sys; print(json.dumps({r[2].split(":")[-1]: float(r[0]) for r in csv.reader(l for l in open(sys.argv[1]) if l[0].isdigit())}))' "$perfout")
  fi
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); a=sys.argv[2:]
r.update(cpu_s=float(a[0])-float(a[1]), machine_cpu_s=float(a[2])-float(a[3]), commits=int(a[4])-int(a[5]), drain_s=float(a[6]), perf=json.loads(a[7])); print(json.dumps(r))' \
    "$json" "$cpu1" "$cpu0" "$mach1" "$mach0" "$j1" "$j0" "$drained" "$perf"
}
results=$mnt/results.jsonl; : > "$results"
echo "A = $A"; echo "B = $B"
echo "scenario: STARTTLS TLS $TLS, $C clients, $SIZE bytes, $K message(s) per session, $D s per run; $(nproc) cores shared with the load generator"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which build goes first, so neither always follows the other's writeback.
  order="A B"; [ $((round % 2)) = 0 ] && order="B A"
  for name in $order; do
    r=$(run "$name"); echo "{\"round\":$round,\"build\":\"$name\",\"r\":$r}" >> "$results"
  done
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def figures(r):
    n = r["messages"]
    ph = {p["phase"]: p for p in r["phases_ms"]}
    f = {"acc": r["messages_per_sec"], "del": n / (r["seconds"] + r["drain_s"]),
         "cpu": 1000 * r["cpu_s"] / n, "mach": 1000 * r["machine_cpu_s"] / n,
         "p50": ph["session"]["p50"], "p99": ph["session"]["p99"], "commits": r["commits"] / n,
         "errors": sum(r["errors"].values()) if r["errors"] else 0}
    for k, v in r.get("perf", {}).items():
        f[k] = v / n
    return f
print(f"{'round':>5} {'build':>5} {'msgs/s acc':>10} {'msgs/s del':>10} {'srv ms/msg':>10} {'mach ms/msg':>11} {'p50 ms':>7} {'p99 ms':>7} {'commits/msg':>11} {'errors':>6}  perf per msg")
by = {"A": [], "B": []}
for x in rows:
    f = figures(x["r"]); by[x["build"]].append(f)
    perf = " ".join(f"{k}={f[k]:.2f}" for k in sorted(f) if k.startswith(("sys_enter", "context")))
    print(f"{x['round']:>5} {x['build']:>5} {f['acc']:10.1f} {f['del']:10.1f} {f['cpu']:10.3f} {f['mach']:11.3f} {f['p50']:7.1f} {f['p99']:7.1f} {f['commits']:11.3f} {f['errors']:6}  {perf}")
mean = lambda fs, k: sum(f[k] for f in fs) / len(fs)
print("B against A (means of the rounds): " + ", ".join(
    f"{k} {100 * (mean(by['B'], k) / mean(by['A'], k) - 1):+.1f} %" for k in ("acc", "del", "cpu", "mach", "commits") if mean(by["A"], k)))
PY
