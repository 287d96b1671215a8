#!/usr/bin/env bash
# Fuzz every netloop decoder with libFuzzer on the stable toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]    # default: 60 seconds, every target
#
# Stable Rust has no sanitizers, so targets are built with `--sanitizer none`
# (release, with debug assertions and overflow checks: cargo-fuzz's default).
# A panic stops that target and leaves its input in fuzz/artifacts/<target>/;
# the script goes on with the other targets and exits non-zero at the end.
# Reproduce with: cargo fuzz run -s none <target> fuzz/artifacts/<target>/crash-...
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none
failed=()
for target in "${targets[@]}"; do
    echo "=== $target: ${seconds}s ==="
    if ! cargo fuzz run -s none "$target" -- -max_total_time="$seconds"; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes in: ${targets[*]}"
