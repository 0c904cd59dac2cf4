#!/usr/bin/env bash
# One device call of the issue-17 quality benchmarks (H200), for one model family:
#   bash benchmarks/quality/gpu_batch.sh llama|qwen2
# runs benchmarks/quality/search_vs_peers.py twice side by side: the default (hqq) proxy and
# proxy=gptq (a 17M model leaves the GPU mostly idle; each process gets 8 CPU threads).
# Carry .whl/ (hydra, omegaconf, optuna, ...) and .shared/: models/amq-llama-17m (and, for qwen2,
# models/qwen2-17m-linuxdoc, else it is built here with build_qwen2.py), data/linuxdoc,
# data/wikitext2/test.txt, and runs/ from an earlier call, which resume (nothing evaluated twice).
set -u
which=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/kernels AMQ_CACHE_DIR=/tmp/amq-cache OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1
S=$PWD/.shared
END=$(( $(date +%s) + ${BUDGET_S:-540} ))   # every bench is stopped by then, so the results still come back
mkdir -p "$OUT/res" "$OUT/logs" /tmp/runs
[ -d "$S/runs" ] && cp -r "$S/runs/." /tmp/runs/
bench() {  # name model extra...
  local name=$1 model=$2; shift 2
  timeout $(( END - $(date +%s) )) python3 benchmarks/quality/search_vs_peers.py --model "$model" --name "$name" \
    --calib "$S/data/linuxdoc/calib.txt" --test "$S/data/linuxdoc/test.txt" --test "$S/data/wikitext2/test.txt" \
    --agreement 30 --deadline-at $(( END - 40 )) --out "$OUT/res" --run-dir "/tmp/runs/$name" "$@" > "$OUT/logs/$name.log" 2>&1
  echo "$name rc=$?"
}
nvidia-smi --query-gpu=name --format=csv,noheader
if [ "$which" = llama ]; then
  model=$S/models/amq-llama-17m name=amq-llama-17m
else
  model=$S/models/qwen2-17m-linuxdoc name=qwen2-17m-linuxdoc
  [ -f "$model/config.json" ] || python3 benchmarks/quality/build_qwen2.py --tokenizer "$S/models/amq-llama-17m" \
    --text "$S/data/linuxdoc/calib.txt" --out "$model" > "$OUT/logs/build_qwen2.log" 2>&1
fi
bench "$name" "$model" &
bench "${name}_proxy-gptq" "$model" proxy=gptq &
wait
tar czf "$OUT/results-$which.tar.gz" -C "$OUT" res logs && rm -r "$OUT/res" "$OUT/logs"
tar czf "$OUT/runs-$which.tar.gz" --exclude='*.png' --exclude='wandb' -C /tmp runs
ls -la "$OUT"
