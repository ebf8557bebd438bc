#!/usr/bin/env bash
# Everything a machine with a GPU should measure, in one go (a few minutes on an H100-class GPU):
#   1. the install check on CuPy with the plain layers: the whole test suite on CuPy, parity with NumPy, a
#      short training run;
#   2. the same with the GPU's fast path (TINYMAE_FAST_GPU=1: fused kernels, one-kernel AdamW, photos
#      resident on the GPU), which has not run on a GPU before: its parity with NumPy and a training run;
#   3. the step against PyTorch on the same GPU, with the kernel launches per step, both ways.
# Run from the repository root after pip install -e ".[cuda13,test]" (or cuda12) and pytest-xdist:
#     bash benchmarks/gpu_check.sh            # BACKEND=numpy bash benchmarks/gpu_check.sh tries the flow on a CPU
# Each part's output goes to the terminal and to $LOGS (default: gpu-check-logs/).
set -uo pipefail
BACKEND="${BACKEND:-cupy}"
LOGS="${LOGS:-gpu-check-logs}"
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
run bench-plain env TINYMAE_BACKEND="$BACKEND" python benchmarks/bench_step.py --no-memory
run bench-fast env TINYMAE_BACKEND="$BACKEND" TINYMAE_FAST_GPU=1 python benchmarks/bench_step.py --no-memory
echo "== logs in $LOGS/; $([ $status = 0 ] && echo PASS || echo 'FAIL: see the parts marked FAILED')"
exit $status
