#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one go (CI has none). Run from the repository root with the project
# importable; each step's output is saved under OUTDIR and every benchmark writes its figures to
# benchmarks/results/<benchmark>-<gpu>.json.
#   bash benchmarks/gpu_checks.sh [OUTDIR] [STEP ...]
# STEPs, in the order given (default: all below, in this order):
#   learn          the deep-RHM model (benchmarks/hierarchy_learned.py, m=2 and m=3 side by side) and the GPU
#                  tests, all at once: none of them reports a time, so they share the GPU
#   precision      bf16-mixed vs fp32 images/s of both image configs, torch.compile on the CIFAR-10 U-Net
#   training_step  Trainer step vs a hand-written loop
#   walltime       python train.py, and 500 steps of each image config on full-size fake data
#   callbacks      each diagnostic callback's cost on the CIFAR-10 U-Net config
#   jacobian       top-k Jacobian vs jacrev
# BUDGET=<seconds> makes every step stop by then (each also has its own time box); RHM_MINUTES sets the deep-RHM
# training time (default 2.5).
set -uo pipefail
out=${1:-gpu_checks}
shift || true
steps=${*:-learn precision training_step walltime callbacks jacobian}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
deadline=$((SECONDS + ${BUDGET:-100000}))
$py -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" \
    | tee "$out/device.txt" || exit 1
run() {  # name, seconds, command...: run it under min(seconds, time left), keep its output and exit status
    local name=$1 limit=$2; shift 2
    local left=$((deadline - SECONDS))
    ((left < limit)) && limit=$left
    if ((limit < 5)); then echo "== $name: skipped, no time left" | tee "$out/$name.txt"; return; fi
    echo "== $name (at most ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local status=$?
    echo "exit $status after $((SECONDS - start))s" >> "$out/$name.txt"
    tail -n 25 "$out/$name.txt"
}
minutes=${RHM_MINUTES:-2.5}
for step in $steps; do
    case $step in
        learn)
            run hierarchy 330 $py benchmarks/hierarchy_learned.py --max-minutes "$minutes" &
            run hierarchy_m3 330 $py benchmarks/hierarchy_learned.py --max-minutes "$minutes" \
                --name hierarchy_learned_m3 -- --data.init_args.m=3 &
            run tests 300 $py -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_precision.py \
                tests/test_compile.py tests/test_rhm_deep.py
            wait ;;
        precision) run precision 150 $py benchmarks/precision.py --steps 100 --warmup 20 --repeats 2 \
                   --compile cifar10_unet ;;
        walltime) run walltime 120 $py benchmarks/run_walltime.py --steps 500 --short 100 ;;
        callbacks) run callbacks 150 $py benchmarks/callback_cost.py --config configs/images/cifar10_unet.yaml \
                   --max-steps 1000 --together ;;
        training_step) run training_step 60 $py benchmarks/training_step.py --device cuda --backbone unet \
                   --steps 300 --repeats 3 ;;
        jacobian) run jacobian 60 $py benchmarks/jacobian_topk.py --device cuda --train-steps 1000 ;;
        *) echo "unknown step $step" ;;
    esac
done
