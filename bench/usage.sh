#!/usr/bin/env bash
# TLS usage benchmark.
#  1. Report speed: load N synthetic events (default 10 million, 20 tenants x 200 senders
#     over 90 days), then time 90-day reports for one tenant (each run is a whole
#     `mailgate report` process: start, open, query, format).
#  2. Recording cost: submission throughput with [usage] enabled and disabled, alternated
#     (mailgate-load, STARTTLS, TLS 1.3, 10 KB, one message per session).
# Usage: bench/usage.sh [--events N] [--duration D] [--concurrency C] [--skip-load DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=10000000; D=10; C=16; DATA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS=$2; shift 2;; --duration) D=$2; shift 2;; --concurrency) C=$2; shift 2;;
    --skip-load) DATA=$2; shift 2;;
    *) echo "usage: $0 [--events N] [--duration D] [--concurrency C] [--skip-load DIR]" >&2; exit 2;;
  esac
done
. bench/build.sh
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 2>/dev/null

config() { # usage_enabled data_dir
cat <<TOML
hostname = "bench.test"
data_dir = "$2"
[log]
level = "warn"
[limits]
max_sessions_per_ip = 10000
max_sessions_per_subnet = 100000
max_connections_per_ip_per_minute = 0
[usage]
enabled = $1
[[tls.certificate]]
cert = "$work/cert.pem"
key = "$work/key.pem"
[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
TOML
}

echo "== 1. report speed"
if [ -z "$DATA" ]; then
  DATA="$work/reports"
  config true "$DATA" > "$work/reports.toml"
  $M --config "$work/reports.toml" usage load-synthetic --events "$EVENTS" --days 90 --tenants 20 --senders 200
else
  config true "$DATA" > "$work/reports.toml"
fi
sqlite3 "$DATA/usage.sqlite" "select 'stored: ' || (select count(*) from usage_events) || ' raw events, ' || (select count(*) from usage_daily) || ' daily rollup rows'" 2>/dev/null || true
for report in "tls" "legacy" "what-if --disable-legacy" "what-if --on 2027-06-01"; do
  times=()
  for _ in 1 2 3 4 5; do
    s=$(date +%s%N)
    # shellcheck disable=SC2086
    $M --config "$work/reports.toml" report $report --tenant tenant3 --since 90d --format json > "$work/out.json"
    e=$(date +%s%N)
    times+=($(( (e - s) / 1000000 )))
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
  rows=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/out.json")
  printf '  report %-26s %4s rows   ms (5 runs, sorted): %s\n' "$report" "$rows" "$sorted"
done

echo "== 2. recording cost (usage on vs off, alternated, $D s each, c=$C)"
run_server() { # usage_enabled
  config "$1" "$work/smtp-$1" > "$work/smtp-$1.toml"
  if [ ! -d "$work/smtp-$1" ]; then
    $M --config "$work/smtp-$1.toml" tenant add bench >/dev/null
    $M --config "$work/smtp-$1.toml" domain add bench.test --tenant bench >/dev/null
    echo "bench-password-1" | $M --config "$work/smtp-$1.toml" user add load@bench.test --password-stdin >/dev/null
  fi
  $M --config "$work/smtp-$1.toml" serve > "$work/out-$1" 2> "$work/err-$1" &
  server_pid=$!
  for _ in $(seq 1 100); do grep -q listening "$work/out-$1" 2>/dev/null && break; sleep 0.1; done
  addr=$(awk '{print $3; exit}' "$work/out-$1")
}
declare -A total
for round in 1 2; do
  for enabled in true false; do
    run_server $enabled
    r=$($L --addr "$addr" --mode starttls --tls 1.3 -c "$C" --duration "$D" --user load@bench.test --password bench-password-1 --to load@bench.test --size 10240 --json --label "usage=$enabled" | tail -1)
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    mps=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.1f" % r["messages_per_sec"])' "$r")
    echo "  round $round usage=$enabled: $mps msgs/s"
    total[$enabled]=$(python3 -c "print(${total[$enabled]:-0} + $mps)")
  done
done
python3 -c "on=${total[true]}; off=${total[false]}; print(f'  recording cost: {100*(off-on)/off:.1f}% of throughput (on {on/2:.1f} vs off {off/2:.1f} msgs/s)')"
