#!/usr/bin/env bash
# Runs on the lent GPU machine, after every piece of scripts/gpu/prepare.sh has arrived in
# .gpu/pieces: installs onnxruntime-gpu, pytorch-crf and this project under /tmp/site,
# exports the checkpoint to an fp16 bundle and runs `nere bench` on CUDA with the PyTorch
# eager baseline. Reports go to $OUT (or runs/gpu-out).
#
#     bash scripts/gpu/device_bench.sh            # on the device
#     DRY=1 bash scripts/gpu/device_bench.sh      # here, on CPU: the same steps with the
#                                                 # local onnxruntime, fp32, --device cpu
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu-out}
mkdir -p "$out"
p=.gpu/pieces
ls $p/ort.tar.xz.* $p/ckpt.tar.xz.* $p/corpus.parquet $p/pytorch_crf-*.whl $p/ckpt.name >/dev/null
site=/tmp/nere-site
rm -rf "$site" /tmp/nere-ckpt /tmp/nere-bundle && mkdir -p "$site" /tmp/nere-ckpt
if [ -z "${DRY:-}" ]; then
  cat $p/ort.tar.xz.* | xz -dc | tar -C "$site" -xf -
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" $p/pytorch_crf-*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" .
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
# the CUDA 13 libraries of the image's nvidia-* packages (cuBLAS, cuDNN, ...), for onnxruntime's CUDA provider
libs=$(python3 -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/*/lib/*.so*')})))")
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cat $p/ckpt.tar.xz.* | xz -dc | tar -C /tmp/nere-ckpt -xf -
ckpt=/tmp/nere-ckpt/$(cat $p/ckpt.name)
nere="python3 -m nere.cli"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers()); print('torch', torch.__version__, torch.cuda.is_available())"
} | tee "$out/versions.txt"
if [ -n "${DRY:-}" ]; then
  precision=fp32; device=cpu; extra=(--limit 64 --batch-sizes 1,8 --repeats 1 --latency-seconds 1 --no-rss)
else
  precision=fp16; device=cuda; extra=(--batch-sizes 1,8,32,128,512 --repeats 5)
fi
set -o pipefail
$nere export "$ckpt" --precision "$precision" --out /tmp/nere-bundle 2>&1 | tee "$out/export.log"
$nere bench -m /tmp/nere-bundle --corpus $p/corpus.parquet --device "$device" --baseline torch \
  --checkpoint "$ckpt" "${extra[@]}" -o "$out/bench" 2>&1 | tee "$out/bench.log"
