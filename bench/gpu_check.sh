#!/usr/bin/env bash
# Every GPU measurement and test of the benchmarks page in one go (about six minutes on one H100 or H200):
#   pip install -e ".[gpu]" && bash bench/gpu_check.sh
# Each step runs under a time limit and keeps its log under $OUT (default bench-out/), one file per step; a step
# that fails or runs out of time is named and the next one runs. The same steps on a CPU, small, to try the script
# where there is no GPU:  DEVICE=cpu MODEL=nano BATCH=2 STEPS=2 REPEATS=1 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda} MODEL=${MODEL:-gpt2} BATCH=${BATCH:-32} STEPS=${STEPS:-20} REPEATS=${REPEATS:-3}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME SECONDS COMMAND...: run under a time limit, keep the log, go on after a failure
    echo "== $1: ${*:3}" | tee "$OUT/$1.log"
    timeout "$2" "${@:3}" 2>&1 | tee -a "$OUT/$1.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $1 failed (exit $rc$([ "$rc" -eq 124 ] && echo ": past its $2 s"))"; failed=1; }
}
bench=(python bench/throughput.py --device "$DEVICE")
head=(--vocab-size 50304)  # GPT-2's padded vocabulary, without training a tokenizer that large
compiled=(trainer.compile=true) fp8=(--against trainer.precision=fp8)
[ "$DEVICE" = cpu ] && compiled=() fp8=()

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.log"
    python -c 'import torch; from importlib.metadata import version as v
print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability())
print(*(f"{p} {v(p)}" for p in ("triton", "torchao", "liger-kernel")))' 2>&1 | tee -a "$OUT/device.log"
    # every test marked cuda: FlexAttention, fp16 with the GradScaler (AdamW, Muon), fp8, the fused loss
    step cuda-tests 200 python -m pytest -m cuda -q -p no:cacheprovider
fi
# The speed goal: the template against the bare loop, GPT-2 124M at 32 × 1,024 tokens, with where the time goes.
step speed 180 "${bench[@]}" --model "$MODEL" "${head[@]}" --batch-size "$BATCH" \
    --steps "$STEPS" --repeats "$REPEATS" --profile "${compiled[@]}"
# fp8 and the fused loss against bf16: speed, memory, and the loss after the same 200 updates.
step options 200 "${bench[@]}" --model "$MODEL" "${head[@]}" --batch-size "$BATCH" --steps 25 \
    --repeats "$((REPEATS > 1 ? 8 : 1))" "${compiled[@]}" "${fp8[@]}" --against model.fused_cross_entropy=true
# The document mask's cost: FlexAttention against unmasked attention.
step document-mask 60 python bench/document_mask.py --steps 20 model="$MODEL" trainer.batch_size=16 \
    trainer.device="$DEVICE"
# fp8 at GPT-2 medium.
if [ "$DEVICE" = cuda ]; then
    step fp8-medium 120 "${bench[@]}" --model gpt2-medium "${head[@]}" --batch-size 16 --steps 10 --repeats 3 \
        "${compiled[@]}" "${fp8[@]}"
fi
exit $failed
