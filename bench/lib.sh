# Sourced by the benchmark scripts: what they share.

# mailgate_setup BIN DIR CERT KEY PASSWORD writes DIR/mailgate.toml (data in DIR/data) with two
# STARTTLS endpoints on 127.0.0.1, port 0: `standard-starttls` (TLS 1.2/1.3) and
# `legacy-starttls` (TLS 1.0-1.3); tenant `bench` with domain bench.test, legacy TLS allowed;
# user load@bench.test with PASSWORD. Start it with `BIN --config DIR/mailgate.toml serve`;
# it prints `listening <endpoint> <address>` per endpoint.
mailgate_setup() {
  local bin=$1 dir=$2 cert=$3 key=$4 pass=$5
  mkdir -p "$dir"
  cat > "$dir/mailgate.toml" <<TOML
hostname = "bench.test"
data_dir = "data"
[log]
level = "warn"
[limits]
max_sessions = 20000
max_sessions_per_ip = 20000
max_sessions_per_subnet = 100000
max_connections_per_ip_per_minute = 0
[[tls.certificate]]
cert = "$cert"
key = "$key"
[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
[[endpoint]]
name = "legacy-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
tls_versions = ["1.0", "1.1", "1.2", "1.3"]
TOML
  "$bin" --config "$dir/mailgate.toml" tenant add bench >/dev/null
  "$bin" --config "$dir/mailgate.toml" domain add bench.test --tenant bench >/dev/null
  "$bin" --config "$dir/mailgate.toml" tenant set bench --allow-legacy-tls on >/dev/null
  echo "$pass" | "$bin" --config "$dir/mailgate.toml" user add load@bench.test --password-stdin >/dev/null
}

# drain_seconds CMD [ARGS...] -> seconds until CMD prints 0 (the count of messages still
# queued), polled every 0.1 s, at most 120 s.
drain_seconds() {
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 1 1200); do [ "$("$@")" = 0 ] && break; sleep 0.1; done
  python3 -c 'import sys,time; print(round(time.time()-float(sys.argv[1]), 2))' "$t0"
}
