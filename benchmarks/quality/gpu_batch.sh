#!/usr/bin/env bash
# One device call for the issue-17 quality benchmarks (H200): the in-domain Qwen2 is built, then
# {amq-llama-17m, qwen2-17m} x {hqq proxy (default), gptq proxy} run side by side as 4 processes
# (a 17M model leaves the GPU mostly idle; each process gets 4 CPU threads).
#   needs: .shared/ (models/amq-llama-17m, data/linuxdoc, data/wikitext2/test.txt) and .whl/ carried
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/kernels AMQ_CACHE_DIR=/tmp/amq-cache OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1
S=$PWD/.shared
END=$(( $(date +%s) + ${BUDGET_S:-570} ))   # every bench is stopped by then, so the results still come back
mkdir -p "$OUT/res" "$OUT/logs"
bench() {  # name model extra...
  local name=$1 model=$2; shift 2
  timeout $(( END - $(date +%s) )) python3 benchmarks/quality/search_vs_peers.py --model "$model" --name "$name" --calib "$S/data/linuxdoc/calib.txt" \
    --test "$S/data/linuxdoc/test.txt" --test "$S/data/wikitext2/test.txt" --agreement 30 --deadline-at $(( END - 45 )) \
    --out "$OUT/res" --run-dir "/tmp/runs/$name" "$@" > "$OUT/logs/$name.log" 2>&1
  echo "$name rc=$?"
}
nvidia-smi --query-gpu=name --format=csv,noheader
bench amq-llama-17m "$S/models/amq-llama-17m" &
bench amq-llama-17m_proxy-gptq "$S/models/amq-llama-17m" proxy=gptq &
python3 benchmarks/quality/build_qwen2.py --tokenizer "$S/models/amq-llama-17m" --text "$S/data/linuxdoc/calib.txt" \
  --out /tmp/qwen2-17m-linuxdoc > "$OUT/logs/build_qwen2.log" 2>&1 && {
  bench qwen2-17m-linuxdoc /tmp/qwen2-17m-linuxdoc &
  bench qwen2-17m-linuxdoc_proxy-gptq /tmp/qwen2-17m-linuxdoc proxy=gptq &
}
wait
tar czf "$OUT/results.tar.gz" -C "$OUT" res logs && rm -r "$OUT/res" "$OUT/logs"
tar czf "$OUT/runs.tar.gz" --exclude='*.png' -C /tmp runs qwen2-17m-linuxdoc/config.json qwen2-17m-linuxdoc/amq_recipe.json 2>/dev/null
# the trained Qwen2 comes back too (in pieces under the 16 MB file limit), so a later call can reuse it
[ -f /tmp/qwen2-17m-linuxdoc/config.json ] && tar czf - -C /tmp qwen2-17m-linuxdoc | split -b 15M - "$OUT/qwen2-17m-linuxdoc.tgz.part-"
ls -la "$OUT"
