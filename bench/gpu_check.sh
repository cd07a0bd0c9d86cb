#!/usr/bin/env bash
# Every GPU measurement of the benchmarks page in one go (a few minutes on one H100 or H200):
#   bash bench/gpu_check.sh [REF]     # REF: the code to compare this tree with, a git ref or a folder (default HEAD)
# Each figure is printed and kept under $OUT (default bench-out/). The same steps run on a CPU, small and fast,
# to try the script where there is no GPU:  DEVICE=cpu MODEL=nano BATCH=2 STEPS=2 REPEATS=1 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
REF=${1:-HEAD}
DEVICE=${DEVICE:-cuda} MODEL=${MODEL:-gpt2} BATCH=${BATCH:-32} STEPS=${STEPS:-20} REPEATS=${REPEATS:-5}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME COMMAND...: run, keep the log, go on after a failure
    echo "== $1: ${*:2}" | tee "$OUT/$1.log"
    "${@:2}" 2>&1 | tee -a "$OUT/$1.log" || { echo "== $1 failed"; failed=1; }
}
bench=(python bench/throughput.py --device "$DEVICE" --batch-size "$BATCH" --steps "$STEPS" --repeats "$REPEATS")
compiled=(trainer.compile=true)
[ "$DEVICE" = cpu ] && compiled=()

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.log"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.log"
    step cuda-tests python -m pytest -m cuda -q -p no:cacheprovider
fi
# The template against the bare loop (both clip at 1.0), then with clipping off, with GPT-2's 50,304-row head.
step bare "${bench[@]}" --model "$MODEL" --vocab-size 50304 "${compiled[@]}"
step bare-noclip "${bench[@]}" --model "$MODEL" --vocab-size 50304 "${compiled[@]}" trainer.grad_clip=0
# This tree against REF: the speed goal and "never slower elsewhere".
step ref-"$MODEL" "${bench[@]}" --model "$MODEL" --vocab-size 50304 --compare-ref "$REF" "${compiled[@]}"
for other in nano llama-small; do
    step ref-"$other" "${bench[@]}" --model "$other" --compare-ref "$REF" "${compiled[@]}"
done
exit $failed
