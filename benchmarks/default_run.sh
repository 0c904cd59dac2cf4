#!/usr/bin/env bash
# Wall time of the README's main command, first run (builds the embedded model) and cached.
#   bash benchmarks/default_run.sh   (in an installed venv; writes benchmarks/default_run.md)
set -euo pipefail
cd "$(dirname "$0")/.."
cache=$(mktemp -d)
out=$(mktemp -d)
run() {
  local start end
  start=$(date +%s.%N)
  AMQ_CACHE_DIR="$cache" python -m amq.run hydra.run.dir="$out/$1" > "$out/$1.log" 2>&1
  end=$(date +%s.%N)
  python -c "print(f'{$end - $start:.0f}')"
}
first=$(run first)
cached=$(run cached)
mkdir -p docs && cp "$out/cached/front.png" docs/front_default.png
{
  echo "# Default run wall time"
  echo
  echo "Command: \`bash benchmarks/default_run.sh\` (runs \`python -m amq.run\` twice with an empty AMQ_CACHE_DIR)."
  echo "Machine: $(nproc) CPU cores, $(python -c 'import torch; print("torch", torch.__version__)'), $(date -u +%Y-%m-%d)."
  echo
  echo "| run | wall time |"
  echo "|---|---|"
  echo "| first (trains and caches the embedded model, then searches) | ${first} s |"
  echo "| cached | ${cached} s |"
  echo
  echo "Result of the cached run (plans/ and baselines.json):"
  echo
  echo '```'
  for f in "$out"/cached/plans/*.json; do python -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], 'avg_bits', round(d['avg_bits'],3), 'divergence', round(d['divergence'],5))" "$f"; done
  echo "uniform: $(cat "$out/cached/baselines.json" | tr -d '\n ')"
  echo '```'
} > benchmarks/default_run.md
cat benchmarks/default_run.md
