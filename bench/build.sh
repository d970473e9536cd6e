# Sourced by the benchmark scripts: builds the two binaries they run and sets
#   M = the server, built as shipped (linked to the system's OpenSSL);
#   L = the load generator, linked to an OpenSSL built from source (cargo feature
#       `vendored-openssl`, separate target directory target/bench-load so the server's
#       build is untouched). Debian 12's OpenSSL 3.0 decodes the server certificate's key
#       through a new decoder context at every handshake; 3.6 costs the TLS 1.0 client
#       about 30 % less CPU, CPU it would otherwise take from the server on the shared
#       cores (BENCHMARKS.md). Set BENCH_SYSTEM_OPENSSL=1 to use the system's for both.
# The first run compiles OpenSSL (about 5 minutes on 2 cores); later runs reuse it.
cargo build --release --quiet --bin mailgate
M=$PWD/target/release/mailgate
if [ -n "${BENCH_SYSTEM_OPENSSL:-}" ]; then
  cargo build --release --quiet --bin mailgate-load
  L=$PWD/target/release/mailgate-load
else
  cargo build --release --quiet --features vendored-openssl --target-dir target/bench-load --bin mailgate-load
  L=$PWD/target/bench-load/release/mailgate-load
fi
