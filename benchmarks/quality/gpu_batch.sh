#!/usr/bin/env bash
# One device call of the issue-17 quality benchmarks (H200), several side by side (a small model
# leaves the GPU mostly idle):
#   bash benchmarks/quality/gpu_batch.sh amq-llama-17m [amq-llama-17m_proxy-gptq] [tiny-llama] [tiny-qwen2] [qwen2-17m-linuxdoc]
# amq-llama-17m: the shared 17M Llama, linuxdoc calibration, linuxdoc + WikiText-2 tests (optionally
# with proxy=gptq); tiny-llama / tiny-qwen2: the embedded models on their held-out text
# (builtin_text.py); qwen2-17m-linuxdoc: a Qwen2 trained here on the linuxdoc calibration text
# (build_qwen2.py; too little text for a valid comparison, see README).
# Carry .whl/ (hydra, omegaconf, optuna, ...) and .shared/: models/amq-llama-17m (its tokenizer),
# data/linuxdoc, data/wikitext2/test.txt, data/builtin-text, amq-cache/tiny-qwen2-* (else built
# here), models/qwen2-17m-linuxdoc (else built here), and runs/ from an earlier call, which resume.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/amq-cache && [ -d .shared/amq-cache ] && cp -r .shared/amq-cache/. /tmp/amq-cache/
export PYTHONPATH=/tmp/site:$PWD:$PWD/kernels AMQ_CACHE_DIR=/tmp/amq-cache OMP_NUM_THREADS=${THREADS:-5} PYTHONUNBUFFERED=1
S=$PWD/.shared
END=$(( $(date +%s) + ${BUDGET_S:-540} ))   # every bench is stopped by then, so the results still come back
mkdir -p "$OUT/res" "$OUT/logs" /tmp/runs
[ -d "$S/runs" ] && cp -r "$S/runs/." /tmp/runs/
LINUXDOC=(--calib "$S/data/linuxdoc/calib.txt" --test "$S/data/linuxdoc/test.txt" --test "$S/data/wikitext2/test.txt")
bench() {  # name model extra...
  local name=$1 model=$2; shift 2
  [ -f "benchmarks/quality/results/h200/$name.json" ] && cp "benchmarks/quality/results/h200/$name.json" "$OUT/res/"   # its agreement is kept
  timeout $(( END - $(date +%s) )) python3 benchmarks/quality/search_vs_peers.py --model "$model" --name "$name" \
    --agreement 30 --keep-agreement --deadline-at $(( END - 40 )) --out "$OUT/res" --run-dir "/tmp/runs/$name" "$@" > "$OUT/logs/$name.log" 2>&1
  echo "$name rc=$?"
}
nvidia-smi --query-gpu=name --format=csv,noheader
BUILTIN=(--calib "$S/data/builtin-text/calib.txt" --test "$S/data/builtin-text/test.txt" --seq-len 128 --gptq-samples 128)
for which in "$@"; do
  case $which in
    amq-llama-17m) bench amq-llama-17m "$S/models/amq-llama-17m" "${LINUXDOC[@]}" & ;;
    amq-llama-17m_proxy-gptq) bench amq-llama-17m_proxy-gptq "$S/models/amq-llama-17m" "${LINUXDOC[@]}" proxy=gptq & ;;
    tiny-llama|tiny-qwen2) bench "$which" "builtin:$which" "${BUILTIN[@]}" & ;;
    qwen2-17m-linuxdoc)
      model=$S/models/qwen2-17m-linuxdoc
      [ -f "$model/config.json" ] || python3 benchmarks/quality/build_qwen2.py --tokenizer "$S/models/amq-llama-17m" \
        --text "$S/data/linuxdoc/calib.txt" --out "$model" > "$OUT/logs/build_qwen2.log" 2>&1
      tar cz -C "$S/models" qwen2-17m-linuxdoc | split -b 15M - "$OUT/model-qwen2.tgz."   # files come back at <= 16 MB each
      bench qwen2-17m-linuxdoc "$model" "${LINUXDOC[@]}" & ;;
    *) echo "unknown benchmark $which"; exit 2 ;;
  esac
done
wait
tar czf "$OUT/results.tar.gz" -C "$OUT" res logs && rm -r "$OUT/res" "$OUT/logs"
tar czf "$OUT/runs.tar.gz" --exclude='*.png' --exclude='wandb' -C /tmp runs
ls -la "$OUT"
