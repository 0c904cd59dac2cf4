#!/usr/bin/env bash
# The kernel tests (Triton interpreter) alone and on a loaded machine (a default `python -m amq.run`
# running beside them), as CI's 2-core machine may be.
#   bash benchmarks/e2e/tests_under_load.sh   (in an installed venv; writes benchmarks/e2e/results/tests_under_load.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
kernels() {  # log -> wall seconds
  local start end
  start=$(date +%s.%N)
  python -m pytest -q tests/kernels --durations=3 -p no:cacheprovider > "$1" 2>&1 || { tail -n 20 "$1" >&2; exit 1; }
  end=$(date +%s.%N)
  python -c "print(f'{$end - $start:.0f}')"
}
alone=$(kernels "$out/alone.log")
(cd "$out" && AMQ_CACHE_DIR="$out/cache" python -m amq.run logger=none hydra.run.dir="$out/load" > "$out/load.log" 2>&1) &
loaded=$(kernels "$out/loaded.log")
wait
slowest() { grep -E "^[0-9.]+s call" "$1" | head -n 2 | sed -E 's/ +/ /g; s/^/    /'; }
{
  echo "# Kernel tests (Triton interpreter) alone and under load"
  echo
  echo "Command: \`bash benchmarks/e2e/tests_under_load.sh\`. Machine: $(nproc) CPU cores, $(date -u +%Y-%m-%d)."
  echo "The load is a default \`python -m amq.run\` started beside the tests. CI's limit is 90 minutes for everything."
  echo
  echo "| run | tests/kernels wall time |"
  echo "|---|---|"
  echo "| alone | ${alone} s |"
  echo "| beside a default run | ${loaded} s |"
  echo
  echo "Slowest two, alone:"
  echo
  slowest "$out/alone.log"
  echo
  echo "Slowest two, loaded:"
  echo
  slowest "$out/loaded.log"
} > benchmarks/e2e/results/tests_under_load.md
cat benchmarks/e2e/results/tests_under_load.md
