#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one go (CI has none). Run from the repository root with the
# project installed; each output is printed and saved under ${1:-gpu_checks}/.
#   bash benchmarks/gpu_checks.sh [OUTDIR]
set -uo pipefail
out=${1:-gpu_checks}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" \
    | tee "$out/device.txt" || exit 1
run() {  # name, command...: run it, keep its output and exit status
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
    echo "exit ${PIPESTATUS[0]}" | tee -a "$out/$name.txt"
}
run tests_gpu python -m pytest -q tests/test_gpu.py tests/test_precision.py tests/test_compile.py
run precision python benchmarks/precision.py
run training_step python benchmarks/training_step.py --device cuda --backbone unet
run jacobian_topk python benchmarks/jacobian_topk.py --device cuda --train-steps 1000
