# influx-proxy tasks. `just --list` shows them. Install just with `bash .ci/setup`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The main job: two local InfluxDB servers (:8086, :8087) and the proxy (:7076) in front of them.
demo:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bin influx-proxy
    mkdir -p demo
    pids=()
    cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
    trap cleanup EXIT INT TERM
    for spec in a:8086:18088 b:8087:18089; do
      IFS=: read -r name http rpc <<< "$spec"
      dir="$PWD/demo/influxd-$name"
      mkdir -p "$dir"
      printf 'reporting-disabled = true\nbind-address = "127.0.0.1:%s"\n[meta]\n  dir = "%s/meta"\n[data]\n  dir = "%s/data"\n  wal-dir = "%s/wal"\n  query-log-enabled = false\n[http]\n  bind-address = "127.0.0.1:%s"\n  log-enabled = false\n[logging]\n  level = "warn"\n' \
        "$rpc" "$dir" "$dir" "$dir" "$http" > "$dir/influxd.conf"
      influxd -config "$dir/influxd.conf" > "$dir/influxd.log" 2>&1 &
      pids+=($!)
      echo "influxd $name: http://127.0.0.1:$http (pid $!, log $dir/influxd.log)"
    done
    for port in 8086 8087; do
      for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/ping" && break; sleep 0.1; done
    done
    echo
    echo "influx-proxy: http://127.0.0.1:7076 (config/proxy.json, write queues in ./data). Try, in another shell:"
    echo "  curl -XPOST 'http://127.0.0.1:7076/query' --data-urlencode 'q=CREATE DATABASE demo'"
    echo "  curl -XPOST 'http://127.0.0.1:7076/write?db=demo' --data-binary 'cpu,host=a value=1'"
    echo "  curl -G 'http://127.0.0.1:7076/query?db=demo' --data-urlencode 'q=SELECT * FROM cpu'"
    echo "  influx -port 7076 -database demo        # the InfluxDB CLI, through the proxy"
    echo "  curl http://127.0.0.1:7076/health"
    echo "  kill ${pids[1]}   # stop backend b, keep writing, then start it again:"
    echo "  influxd -config $PWD/demo/influxd-b/influxd.conf &   # b catches up from its write queue"
    echo "Ctrl-C stops everything."
    echo
    target/release/influx-proxy --config config/proxy.json

# Run every test: unit, integration (two real influxd, native and wasm proxies), CLI, the WASI host (natively and inside wasmtime), and the wasm core check. Ends with one total line.
test: check-wasm wasm
    #!/usr/bin/env bash
    set -euo pipefail
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    cargo test 2>&1 | tee -a "$log"
    (cd wasm && cargo test --release) 2>&1 | tee -a "$log"
    (cd wasm && cargo test --target wasm32-wasip2) 2>&1 | tee -a "$log"
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
         END { printf "\nall tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log"

# The core must build for wasm32-wasip2 with no default features (no smol, no IO).
check-wasm:
    cargo check --no-default-features --target wasm32-wasip2 --lib

# Build the WebAssembly component: wasm/target/wasm32-wasip2/release/influx-proxy.wasm (its core module size-optimised by wasm-opt during the link: wasm/tools/wasm-ld-opt).
wasm:
    cd wasm && cargo build --release --target wasm32-wasip2
    @ls -l wasm/target/wasm32-wasip2/release/influx-proxy.wasm | awk '{print "influx-proxy.wasm: " $5 " bytes"}'

# Write benchmark: proxy (native and wasm) vs. one sink directly; prints lines/s, p50/p99, peak RSS. Then the query benchmark (69,905 statements, two influxd).
bench: wasm
    INFLUX_PROXY_WASM="$PWD/wasm/target/wasm32-wasip2/release/influx-proxy.wasm" cargo bench --bench write
    cargo bench --bench parse
    cargo bench --bench query
    cargo bench --bench rebalance

# Validate a config and print its routes.
check config="config/proxy.json":
    cargo run --release --bin influx-proxy -- check --config {{config}}

# Coverage-guided fuzzing (cargo-afl, stable Rust) of TARGET (line_protocol, statement, request_head, backend_response, or all) for SECONDS each, on one core; resumes tests/fuzz/findings/. Fails if a crash is found.
fuzz target="all" seconds="60":
    tests/fuzz/fuzz.sh {{target}} {{seconds}}

# CI's bounded fuzzing run: the committed regression inputs replayed, then each target for 25 s from its seeds (plus the build, ~3 min cold); fails if a crash is found.
fuzz-ci:
    cd tests/fuzz && cargo test --lib
    tests/fuzz/fuzz.sh all 25 --fresh

# Formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
