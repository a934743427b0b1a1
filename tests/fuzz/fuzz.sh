#!/usr/bin/env bash
# Runs fuzz targets under AFL++ (cargo-afl, stable Rust), one after the other
# on one core, and fails if any found a crash.
#   tests/fuzz/fuzz.sh TARGET|all SECONDS [--fresh]
# TARGET: line_protocol, statement, request_head, backend_response (see
# src/lib.rs). Findings go to tests/fuzz/findings/TARGET/ (not in git); a run
# resumes the previous one unless --fresh. Seeds: corpus/TARGET/ and
# regressions/TARGET/. Needs `cargo afl` (bash .ci/setup installs it).
# Reproduce a crash: tests/fuzz/target/release/TARGET < CRASH_FILE
set -euo pipefail
cd "$(dirname "$0")"

all=(line_protocol statement request_head backend_response)
target=${1:?usage: fuzz.sh TARGET|all SECONDS [--fresh]}
seconds=${2:?usage: fuzz.sh TARGET|all SECONDS [--fresh]}
fresh=${3:-}
if [ "$target" = all ]; then
  targets=("${all[@]}")
else
  [[ " ${all[*]} " == *" $target "* ]] || { echo "fuzz: unknown target $target (${all[*]})" >&2; exit 2; }
  targets=("$target")
fi
command -v cargo-afl >/dev/null || { echo "fuzz: cargo-afl is missing: run bash .ci/setup" >&2; exit 1; }

cargo afl build --release --quiet

# No CPU-frequency check and no core-dump check (neither changes what is
# found), no screen UI, no pinning to a core (the machine is shared).
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
export AFL_FAST_CAL=1
[ "$fresh" = --fresh ] || export AFL_AUTORESUME=1

failed=0
for t in "${targets[@]}"; do
  out="findings/$t"
  [ "$fresh" = --fresh ] && rm -rf "$out"
  mkdir -p "$out/seeds"
  cp corpus/"$t"/* "$out/seeds/"
  if [ -d "regressions/$t" ]; then cp regressions/"$t"/* "$out/seeds/"; fi
  case "$t" in
    line_protocol | statement) dict="dict/$t.dict" ;;
    *) dict=dict/http.dict ;;
  esac
  echo "fuzz: $t for ${seconds}s (findings in tests/fuzz/$out)"
  # -t: a run over 2 s is a hang (kept apart, not a crash).
  cargo afl fuzz -i "$out/seeds" -o "$out" -x "$dict" -t 2000 -V "$seconds" "target/release/$t" > "$out/afl.log" 2>&1 || {
    echo "fuzz: afl-fuzz failed for $t:" >&2
    tail -20 "$out/afl.log" >&2
    exit 1
  }
  stats="$out/default/fuzzer_stats"
  get() { awk -v k="$1" '$1 == k { print $3 }' "$stats"; }
  crashes=$(find "$out/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
  hangs=$(find "$out/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
  echo "fuzz: $t: $(get execs_done) executions in $(get run_time) s ($(get execs_per_sec)/s), corpus $(get corpus_count), crashes $crashes, hangs $hangs"
  if [ "$hangs" -gt 0 ]; then
    echo "fuzz: $t: inputs that ran over 2 s (not counted as failures):"
    find "$out/default/hangs" -name 'id:*' | head -5 | sed 's/^/  tests\/fuzz\//'
  fi
  if [ "$crashes" -gt 0 ]; then
    echo "fuzz: $t CRASHED; reproduce with tests/fuzz/target/release/$t < FILE, for example:" >&2
    find "$out/default/crashes" -name 'id:*' | sort | head -5 | sed 's/^/  tests\/fuzz\//' >&2
    failed=1
  fi
done
exit $failed
