#!/usr/bin/env bash
# Everything a machine with a GPU should measure, in one go (a few minutes on an H100-class GPU):
#   1. the install check on CuPy with the plain step (fast.training_step without TINYMAE_FAST_GPU): the whole test
#      suite on CuPy, parity of a training step with NumPy, a short training run;
#   2. the same with the GPU's fast path (TINYMAE_FAST_GPU=1: the fused Transformer block, the one-kernel AdamW, the
#      photos resident on the GPU): its parity with NumPy and a training run;
#   3. bench_step.py both ways: the step against PyTorch on the same GPU with the kernel launches per step, and (with
#      TINYMAE_FAST_GPU=1) what each piece of the fast path buys on its own.
# Run from the repository root after pip install -e ".[cuda13,test]" (or cuda12) and pytest-xdist:
#     bash benchmarks/gpu_check.sh
#     BACKEND=numpy PYTEST_ARGS="-q tests/test_core_forward.py" bash benchmarks/gpu_check.sh   # the flow on a CPU
# BENCH_ARGS (default: --repeats 3) goes to both bench_step.py runs. Each part's output goes to the terminal and to
# $LOGS (default: gpu-check-logs/).
set -uo pipefail
BACKEND="${BACKEND:-cupy}"
LOGS="${LOGS:-gpu-check-logs}"
read -ra BENCH <<< "${BENCH_ARGS:---repeats 3}"
mkdir -p "$LOGS"
status=0

run() {  # name, command...: run it, keep its output, remember a failure and go on
    local name="$1"; shift
    echo "== $name: $*"
    if ! "$@" 2>&1 | tee "$LOGS/$name.log"; then status=1; echo "== $name FAILED"; fi
}

run check-plain env TINYMAE_BACKEND="$BACKEND" python examples/check_install.py --backend "$BACKEND" \
    --pytest-args "${PYTEST_ARGS:--n 8 -q tests}"
run check-fast env TINYMAE_BACKEND="$BACKEND" TINYMAE_FAST_GPU=1 python examples/check_install.py \
    --backend "$BACKEND" --pytest-args none
run bench-plain env TINYMAE_BACKEND="$BACKEND" python benchmarks/bench_step.py "${BENCH[@]}" --no-pieces
run bench-fast env TINYMAE_BACKEND="$BACKEND" TINYMAE_FAST_GPU=1 python benchmarks/bench_step.py "${BENCH[@]}"
echo "== logs in $LOGS/; $([ $status = 0 ] && echo PASS || echo 'FAIL: see the parts marked FAILED')"
exit $status
