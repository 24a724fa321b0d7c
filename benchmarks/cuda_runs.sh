#!/usr/bin/env bash
# The committed CUDA runs (results/cuda-*), re-made on a machine with an NVIDIA GPU:
#
#   bash benchmarks/cuda_runs.sh [STEP ...]      steps: tests main seed large peers crossover
#
# With no steps it runs them all, in that order. Each step is bounded by a time limit
# (STEP_LIMITS below; a run cut short keeps every row it finished and can be resumed with
# --resume), replaces its results/cuda-<step>/ folder and logs to $LOGS (default:
# results/cuda-logs). Where ARCHIVE names a folder, a tarball of the runs and logs is
# written there after every step, so whatever finished survives a machine that goes away.
# A copy of the checkout without its .git names its commit in JACBENCH_GIT_COMMIT.
set -uo pipefail
cd "$(dirname "$0")/.."

LOGS=${LOGS:-results/cuda-logs}
mkdir -p "$LOGS"
declare -A STEP_LIMITS=([tests]=150 [main]=210 [seed]=100 [large]=110 [peers]=240 [crossover]=110)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests main seed large peers crossover)

if python3 -m pip install --quiet --no-deps --no-build-isolation --no-index -e . >"$LOGS/install.log" 2>&1; then
    jacbench=(jacbench)
else  # no setuptools or no pip there: run from the tree
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    jacbench=(python3 -m jacbench)
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
    python3 -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1 | tail -1
    python3 -c 'import triton; print("triton", triton.__version__)' 2>&1 | tail -1
    echo "commit ${JACBENCH_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}"
} >"$LOGS/machine.txt" 2>&1
cat "$LOGS/machine.txt"

archive() {
    [ -n "${ARCHIVE:-}" ] || return 0
    tar -czf "$ARCHIVE/cuda-runs.tar.gz.part" results/cuda-* && mv "$ARCHIVE/cuda-runs.tar.gz.part" "$ARCHIVE/cuda-runs.tar.gz"
}

run() {  # run NAME jacbench-run-options...
    local name=$1
    shift
    rm -rf "results/cuda-$name"
    timeout --signal=INT "${STEP_LIMITS[$name]}" "${jacbench[@]}" run --device cuda "$@" \
        --out "results/cuda-$name" --quiet >"$LOGS/$name.log" 2>&1
    echo "== $name: exit $? after ${SECONDS}s"
    tail -n 3 "$LOGS/$name.log"
}

for step in "${steps[@]}"; do
    case $step in
        tests)
            timeout "${STEP_LIMITS[tests]}" python3 -m pytest -q -p no:cacheprovider \
                tests/test_timing.py tests/test_cuda.py tests/test_graphs.py tests/test_fused.py \
                >"$LOGS/tests.log" 2>&1
            echo "== tests: exit $? after ${SECONDS}s"
            tail -n 15 "$LOGS/tests.log"
            ;;
        main) run main --depths 3 5 10 ;;
        seed) run seed --preset seed --cuda-graphs --min-time 0.3 --rounds 3 ;;
        large) run large --preset large --dtype float32 bfloat16 float64 --cuda-graphs ;;
        peers) run peers --preset peers --cuda-graphs --fused --min-time 0.1 ;;
        crossover) run crossover --preset crossover --min-time 0.1 ;;
        *) echo "unknown step $step; steps: tests main seed large peers crossover" ;;
    esac
    archive
done
