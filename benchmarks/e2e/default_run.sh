#!/usr/bin/env bash
# Wall time of the README's main command on this machine: a first run (empty AMQ_CACHE_DIR), a
# cached one, and two first runs at once (a busy machine); then the default front against the
# previous defaults (search.iterations=10 optimizer.generations=40), run after it.
#   bash benchmarks/e2e/default_run.sh   (in an installed venv; writes benchmarks/e2e/results/default_run.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
run() {  # name cache-dir extra-overrides... -> prints wall seconds
  local name=$1 cache=$2 start end; shift 2
  start=$(date +%s.%N)
  if ! AMQ_CACHE_DIR="$cache" python -m amq.run hydra.run.dir="$out/$name" "$@" > "$out/$name.log" 2>&1; then
    tail -n 5 "$out/$name.log" >&2; echo "run $name failed" >&2; exit 1
  fi
  end=$(date +%s.%N)
  python -c "print(f'{$end - $start:.0f}')"
}
first=$(run first "$out/cache-first")
cached=$(run cached "$out/cache-first")
run busy-a "$out/cache-a" > "$out/busy-a.s" &
busy_b=$(run busy-b "$out/cache-b")
wait
busy_a=$(cat "$out/busy-a.s")
previous=$(run previous "$out/cache-first" search.iterations=10 optimizer.generations=40)
mkdir -p docs && cp "$out/cached/front.png" docs/front_default.png
final() {  # run dir -> "div2.5 div3 div3.5" after the final quantizer
  python - "$1" <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1], "plans").glob("*bits.json"), key=lambda p: float(p.name[:-9])):
    d = json.loads(f.read_text())
    print(f"| {f.name[:-9]} | {d['avg_bits']:.3f} | {d['divergence']:.5g} | {d['chosen_by']['divergence']:.5g} | {'+'.join(d['chosen_by']['sources'])} |")
PY
}
hv() { tail -n 1 "$1/iterations.jsonl" | python -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['search/hypervolume']:.4f} ({d['archive/size']} plans)\")"; }
{
  echo "# Default run wall time"
  echo
  echo "Command: \`bash benchmarks/e2e/default_run.sh\` (\`python -m amq.run\` as the README runs it, each with its own AMQ_CACHE_DIR)."
  echo "Machine: $(nproc) CPU cores, $(python -c 'import torch; print("torch", torch.__version__)'), $(date -u +%Y-%m-%d)."
  echo
  echo "| run | wall time |"
  echo "|---|---|"
  echo "| first (empty cache: trains and caches the embedded model, then searches) | ${first} s |"
  echo "| cached (same cache again) | ${cached} s |"
  echo "| busy: two first runs at once on the same cores | ${busy_a} s and ${busy_b} s |"
  echo
  echo "## The default front against the previous defaults (iterations 10, NSGA-II 40 generations)"
  echo
  echo "Same machine, run after the ones above: ${previous} s. Divergence of each budget's plan by the proxy and after GPTQ"
  echo "(the final choice, on held-out calibration windows; lower is better):"
  echo
  echo "| settings | final hypervolume |"
  echo "|---|---|"
  echo "| default (search.iterations=6, optimizer.generations=20) | $(hv "$out/cached") |"
  echo "| previous (search.iterations=10, optimizer.generations=40) | $(hv "$out/previous") |"
  echo
  echo "default:"
  echo
  echo "| budget | avg bits | proxy divergence | after GPTQ | from |"
  echo "|---|---|---|---|---|"
  final "$out/cached"
  echo
  echo "previous:"
  echo
  echo "| budget | avg bits | proxy divergence | after GPTQ | from |"
  echo "|---|---|---|---|---|"
  final "$out/previous"
} > benchmarks/e2e/results/default_run.md
cat benchmarks/e2e/results/default_run.md
