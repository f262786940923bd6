#!/usr/bin/env bash
# The GPU sections of benchmarks/throughput.py in one run (efficiency, batching, memory, flops),
# about 2 to 3 minutes on an H100 or H200 and under 5 with the warm-ups; the whole run is cut at
# 290 s. The figures go to $OUT (the device tool's folder) or benchmarks/results/.
#
#     bash benchmarks/device_throughput.sh [extra options of throughput.py, e.g. --compile]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run on a GPU machine')"
name=$("$python" -c "import torch; w = torch.cuda.get_device_name().split(); print(w[min(1, len(w) - 1)].lower())")
PYTHONPATH=src:. timeout 290 "$python" benchmarks/throughput.py --device cuda \
    --sections efficiency,batching,memory,flops --json "$out/throughput_${name}.json" "$@"
