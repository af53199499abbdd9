#!/usr/bin/env bash
# Packs what a GPU benchmark needs on the lent device machine into pieces that fit its calls.
#
#     bash scripts/gpu/prepare.sh [CHECKPOINT]      # default runs/conll04-ner-bert-crf
#
# A device call carries the working tree plus named ignored paths, 64 MiB in all; the
# tracked tree alone is ~52 MiB (artifacts/ is 49 MB), so the tree is shrunk for the
# device calls (step 2 of docs/benchmarks.md, "For a session lent a GPU") and everything
# else travels as pieces of .gpu/ (ignored), one piece per call:
#   - onnxruntime-gpu (the device image has only the CPU build): the wheel unpacked,
#     re-packed as tar.xz (the 255.6 MB wheel -> 194.7 MiB), split into 58 MiB pieces;
#   - pytorch-crf's wheel (the PyTorch baseline needs it; the image lacks it);
#   - the checkpoint (exported to fp16 on the device, and run there as the baseline);
#   - the benchmark corpus.
# Prints the device calls to make, in order. Needs network access to the package index
# here (pip download), never on the device.
set -euo pipefail
cd "$(dirname "$0")/../.."
ckpt=${1:-runs/conll04-ner-bert-crf}
corpus=${CORPUS:-runs/corpus/en-10k.parquet}
ort=${ORT_GPU:-onnxruntime-gpu==1.31.1}
piece=${PIECE:-58M}
[ -d "$ckpt" ] || { echo "no checkpoint folder $ckpt" >&2; exit 2; }
[ -f "$corpus" ] || { echo "no corpus $corpus (scripts/make_corpus.py)" >&2; exit 2; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/pieces
pip_download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/wheels "$@"
}
pip_download "$ort"
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/pieces pytorch-crf==0.7.2
mkdir -p .gpu/site
python3 -m zipfile -e .gpu/wheels/onnxruntime_gpu-*.whl .gpu/site
tar -C .gpu/site -cf - . | xz -T0 -6 | split -b "$piece" - .gpu/pieces/ort.tar.xz.
tar -C "$(dirname "$ckpt")" -cf - "$(basename "$ckpt")" | xz -T0 -6 | split -b "$piece" - .gpu/pieces/ckpt.tar.xz.
cp "$corpus" .gpu/pieces/corpus.parquet
echo "$(basename "$ckpt")" > .gpu/pieces/ckpt.name
rm -rf .gpu/site .gpu/wheels
echo "pieces (each travels in its own device call, naming it in carry):"
ls -l .gpu/pieces | awk 'NR > 1 {printf "  %-28s %6.1f MiB\n", $9, $5 / 1048576}'
total=$(du -cb .gpu/pieces/* | tail -1 | cut -f1)
echo "total $(( total / 1048576 )) MiB; tree for the device calls: shrink it first (docs/benchmarks.md)"
