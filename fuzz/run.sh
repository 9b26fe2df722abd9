#!/usr/bin/env bash
# Runs every fuzz target in turn, SECONDS each (default 900), on the committed corpus; new
# inputs grow in fuzz/corpus-work/ (ignored), crashes land in fuzz/artifacts/.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (stable toolchain; needs `cargo install cargo-fuzz`)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-900}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(open_dir ops_model open_engine)
for t in "${targets[@]}"; do
    case "$t" in
        open_dir) max_len=512 timeout=60 ;;
        ops_model) max_len=1024 timeout=120 ;;
        open_engine) max_len=256 timeout=60 ;;
        *) echo "unknown target $t (open_dir, ops_model, open_engine)" >&2; exit 2 ;;
    esac
    corpora=("corpus-work/$t")
    [ -d "../tests/fuzz/corpus/$t" ] && corpora+=("../tests/fuzz/corpus/$t")
    mkdir -p "corpus-work/$t"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --no-trace-compares "$t" "${corpora[@]}" \
        -- -fork=1 -ignore_crashes=1 -max_total_time="$secs" -max_len="$max_len" -timeout="$timeout"
done
