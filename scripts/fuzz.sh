#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for a bounded time and reports, per target, the
# executions and the crashes found (crash, timeout, OOM and leak inputs under
# fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh                    every target, 60 s each
#   scripts/fuzz.sh 300 config_load    one target, 5 minutes
#   FUZZ_SANITIZER=none scripts/fuzz.sh   skip AddressSanitizer (faster; the daemon forbids unsafe code)
#
# cargo fuzz passes nightly-only -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

count_artifacts() {
  find "artifacts/$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) 2>/dev/null | wc -l
}

report=()
failed=0
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus" "artifacts/$target"
  # Seeds: the committed ones, and for the config loader the project's real configs.
  seeds=()
  [ -d "seeds/$target" ] && seeds+=("seeds/$target")
  if [ "$target" = config_load ]; then
    cp ../config/*.toml "$corpus/" 2>/dev/null || true
  fi
  dict=()
  [ -f "dicts/$target.dict" ] && dict=("-dict=dicts/$target.dict")
  log="artifacts/$target/last-run.log" # fuzz/artifacts is not committed
  # Built first, so the target's time is spent fuzzing.
  if ! cargo fuzz build --sanitizer "$sanitizer" "$target" >"$log" 2>&1; then
    failed=1
    echo "   $target does not build; see $PWD/$log"
    report+=("$(printf '%-18s does not build (see fuzz/%s)' "$target" "$log")")
    continue
  fi
  before=$(count_artifacts "$target")
  echo "== $target: ${seconds}s (sanitizer: $sanitizer)"
  set +e
  cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    >"$log" 2>&1
  status=$?
  set -e
  rm -rf "${TMPDIR:-/tmp}"/clairo-fuzz-meetings-* # meeting_checks' scratch files
  executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  if [ -z "$executions" ]; then
    # A crash ends the run before the final stats: take the last progress line.
    executions=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  fi
  crashes=$(( $(count_artifacts "$target") - before ))
  corpus_size=$(find "$corpus" -type f | wc -l)
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "   crashed (exit $status); the input and the stack are in $PWD/$log:"
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" | head -5 | sed 's/^/     /' || true
  fi
  report+=("$(printf '%-18s %12s executions  %3s crashes  %6s corpus inputs  exit %s' "$target" "${executions:-?}" "$crashes" "$corpus_size" "$status")")
done

echo
echo "fuzz summary (${seconds}s per target, sanitizer: $sanitizer):"
printf '  %s\n' "${report[@]}"
exit "$failed"
