# GPU numbers of issue 11: the prefix-reuse scorer on Gemma-2-shaped models (random weights, built from a config).
# Run from the repo root on a CUDA machine with torch, transformers>=5.0 and pyarrow; no internet, no offline model
# packages, no weights needed (only the project's code travels). Output: $OUT (device tool) or outputs/gpu-bench.
#
# With the device tool (the script travels with the working tree):
#   mkdir -p .gpu && echo /.gpu/ >> "$(git rev-parse --git-path info/exclude)"   (only for the optional wheel below)
#   optional, exact per-row logits (the image's transformers 5.17 takes the scorer's fallback, a few extra
#   vocabulary projections per mini-batch; the JSON records the transformers version):
#   pip download -q --no-deps -d .gpu transformers==5.24.0
#   then: run(command="bash eval/gpu_bench.sh", carry=[".gpu"], timeout_s=540)
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-outputs/gpu-bench}
mkdir -p "$out"
if ls .gpu/transformers-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/transformers-*.whl \
    && export PYTHONPATH=/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/env.txt"
# 9B first (the number), then 2B, then 27B; 16 timed turns x 50 candidates each (800 pairs per path).
# (BENCH_DEVICE=cpu BENCH_SHAPES=tiny BENCH_TURNS=2 checks the script itself on a CPU machine.)
for shape in ${BENCH_SHAPES:-gemma-2-9b gemma-2-2b gemma-2-27b}; do
  timeout 200 python3 -m eval.bench score --device "${BENCH_DEVICE:-cuda}" --shape "$shape" \
    --turns-score "${BENCH_TURNS:-16}" --gpus 1,8,64 \
    > "$out/score-$shape.txt" 2>&1
  echo "== $shape rc=$?"
  sed '/^{$/q' "$out/score-$shape.txt" | grep -vE 'Warning|deprecated|output = func|^{$'  # the table; JSON follows
done
