#!/usr/bin/env bash
# One-shot GPU check (what produced reports/gpu_check.md): the CUDA path end to end and GPU timings.
# Runs from the repository root on a machine with an NVIDIA GPU and torch/torchvision installed;
# writes its outputs into ${OUT:-./gpu_check}. Uses the checkout as is (PYTHONPATH), no install.
set -uo pipefail
OUT="${OUT:-./gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg NUCLEI_SSL_BENCH_CACHE="$(mktemp -d)"
{
  echo "## environment"; date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
  echo "## device tests"
  python3 -m pytest -q -p no:cacheprovider tests/benchmark/test_devices.py 2>&1 | tail -3
  echo "## end to end on CUDA: maskrcnn + bass, synthetic 1/8, smoke profile (AMP on)"
  /usr/bin/time -f "wall %e s" python3 -m benchmark run --methods maskrcnn,bass --datasets synthetic \
      --ratios 1/8 --profile smoke --device cuda --out /tmp/gpu_results --quiet 2>&1 | grep -v "^\s*$" | tail -12
  python3 - <<'PY'
import json, pathlib
for p in sorted(pathlib.Path("/tmp/gpu_results").rglob("done.json")):
    d = json.loads(p.read_text())
    env = json.loads((p.parent / "env.json").read_text()) if (p.parent / "env.json").exists() else {}
    print(p.parent.parent.name, "patch AJI %.4f" % d["summary"]["patch"]["mean"]["aji"],
          "fit %.1f s" % d["fit_seconds"], "predict %.1f s" % d["predict_seconds"],
          "device", env.get("device", env.get("cuda", "?")))
PY
} 2>&1 | tee "$OUT/gpu_check.log"
timeout 240 python3 scripts/bench_maskrcnn.py --devices cuda --gpu-configs resnet18:256,resnet50:256,resnet50:800 \
    --warmup 3 --iters 10 --out "$OUT/bench_maskrcnn_gpu_cpuheads.md" 2>&1 | tail -15
timeout 200 python3 scripts/bench_maskrcnn.py --devices cuda --profile paper --gpu-configs resnet50:800 \
    --warmup 3 --iters 10 --out "$OUT/bench_maskrcnn_gpu_paper.md" 2>&1 | tail -8
timeout 150 python3 scripts/bench_bass.py --device cuda --profiles cpu,paper --warmup 3 --iters 10 \
    --out "$OUT/bench_bass_gpu.md" 2>&1 | tail -15
