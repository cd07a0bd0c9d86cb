#!/usr/bin/env bash
# Every GPU measurement and test of the benchmarks page in one go, on one H100 or H200:
#   pip install -e ".[gpu]" && bash bench/gpu_check.sh
# On a machine with no network, carry the wheels it lacks in a folder and name it (the image has torch, Triton,
# transformers, tokenizers, pytest, hypothesis, pytest-xdist); where there is network, make the folder with:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .wheels hydra-core==1.3.2 omegaconf==2.3.0 torchao==0.17.0 liger-kernel==0.8.5
#   pip wheel --no-deps -w .wheels antlr4-python3-runtime==4.9.3        # Hydra's parser: an sdist only
#   WHEELS=.wheels bash bench/gpu_check.sh
# Each step runs under a time limit and keeps its log under $OUT (default bench-out/), one file per step; a step
# that fails or runs out of time is named and the next one runs. ONLY="cuda-tests speed" runs those steps alone
# (the steps' limits add up to more than one 10-minute call: split them over two). The same steps on a CPU,
# small, to try the script where there is no GPU:
#   DEVICE=cpu MODEL=nano BATCH=2 STEPS=2 REPEATS=1 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda} MODEL=${MODEL:-gpt2} BATCH=${BATCH:-32} STEPS=${STEPS:-20} REPEATS=${REPEATS:-3}
OUT=${OUT:-bench-out} ONLY=${ONLY:-all} WHEELS=${WHEELS:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
failed=0
STEPS_ALL="cuda-tests speed options document-mask fp8-medium"
for name in $ONLY; do
    [ "$ONLY" = all ] || [[ " $STEPS_ALL " == *" $name "* ]] || { echo "== ONLY: no step $name (steps: $STEPS_ALL)"; exit 2; }
done
wanted() { [ "$ONLY" = all ] || [[ " $ONLY " == *" $1 "* ]]; }
step() {  # step NAME SECONDS COMMAND...: run under a time limit, keep the log, go on after a failure
    wanted "$1" || return 0
    echo "== $1: ${*:3}" | tee "$OUT/$1.log"
    timeout "$2" "${@:3}" 2>&1 | tee -a "$OUT/$1.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $1 failed (exit $rc$([ "$rc" -eq 124 ] && echo ": past its $2 s"))"; failed=1; }
}
has() { python -c "import $1" 2>/dev/null; }

if [ -n "$WHEELS" ]; then  # offline: the carried wheels, without their dependencies (the image has those)
    python -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl || { echo "== installing $WHEELS failed"; exit 2; }
fi
# Before any step: what every step needs, named in one line each rather than a traceback per step.
missing=()
for module in hydra omegaconf torch; do has "$module" || missing+=("$module"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== missing: ${missing[*]} (pip install -e . where there is network, else carry wheels: WHEELS=<folder>)"
    exit 2
fi
if [ "$DEVICE" != cuda ] && [ "$ONLY" != all ]; then
    for name in cuda-tests fp8-medium; do wanted "$name" && echo "== $name: runs with DEVICE=cuda only"; done
fi
# the CUDA steps where there is no GPU would skip their tests and refuse their device: a pass that measured nothing
if [ "$DEVICE" = cuda ] && ! python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "== no CUDA GPU here (torch.cuda.is_available() is False): run it on one, or try it with DEVICE=cpu"
    exit 2
fi

bench=(python bench/throughput.py --device "$DEVICE")
head=(--vocab-size 50304)  # GPT-2's padded vocabulary, without training a tokenizer that large
compiled=(trainer.compile=true) fp8=(--against trainer.precision=fp8) fused=(--against model.fused_cross_entropy=true)
if [ "$DEVICE" = cpu ]; then  # the fused loss runs its fallback there, which tries the step all the same
    compiled=() fp8=()
else  # an option whose package is missing would be timed as its fallback: left out, a failure where its step runs
    if (wanted options || wanted fp8-medium) && ! has torchao; then
        fp8=(); echo "== torchao missing: no fp8 figures"; failed=1
    fi
    if wanted options && ! has liger_kernel; then
        fused=(); echo "== liger-kernel missing: no fused-loss figures"; failed=1
    fi
fi

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.log"
    python -c 'import torch; from importlib.metadata import version as v
print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability())
print(*(f"{p} {v(p)}" for p in ("triton", "torchao", "liger-kernel", "hydra-core")))' 2>&1 | tee -a "$OUT/device.log"
    # every test marked cuda: FlexAttention, fp16 with the GradScaler (AdamW, Muon), fp8, the fused loss; only the
    # files that hold them, so that a package their other files import (wandb, datasets) need not be carried
    mapfile -t cuda_files < <(grep -rlE "mark\.cuda" tests | sort)
    if [ ${#cuda_files[@]} -gt 0 ]; then
        step cuda-tests 280 python -m pytest -m cuda -q -p no:cacheprovider "${cuda_files[@]}"
    elif wanted cuda-tests; then
        echo "== cuda-tests: no test file marks a test cuda"; failed=1
    fi
fi
# The speed goal: the template against the bare loop, GPT-2 124M at 32 × 1,024 tokens, with where the time goes.
step speed 180 "${bench[@]}" --model "$MODEL" "${head[@]}" --batch-size "$BATCH" \
    --steps "$STEPS" --repeats "$REPEATS" --profile "${compiled[@]}"
# fp8 and the fused loss against bf16: speed, memory, and the loss after the same 200 updates.
if [ ${#fp8[@]} -gt 0 ] || [ ${#fused[@]} -gt 0 ]; then
    step options 200 "${bench[@]}" --model "$MODEL" "${head[@]}" --batch-size "$BATCH" --steps 25 \
        --repeats "$((REPEATS > 1 ? 8 : 1))" "${compiled[@]}" "${fp8[@]}" "${fused[@]}"
fi
# The document mask's cost: FlexAttention against unmasked attention.
step document-mask 60 python bench/document_mask.py --steps 20 model="$MODEL" \
    trainer.batch_size="$((BATCH / 2 > 0 ? BATCH / 2 : 1))" trainer.device="$DEVICE"
# fp8 at GPT-2 medium.
if [ "$DEVICE" = cuda ] && [ ${#fp8[@]} -gt 0 ]; then
    step fp8-medium 120 "${bench[@]}" --model gpt2-medium "${head[@]}" --batch-size 16 --steps 10 --repeats 3 \
        "${compiled[@]}" "${fp8[@]}"
fi
exit $failed
