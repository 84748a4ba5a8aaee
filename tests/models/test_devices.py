"""The one device rule (models/devices.py), on what the installed torch sees."""

import subprocess
import sys

import pytest
import torch
from helpers import ROOT, index

import ragbatch
from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.models.devices import pick_device
from ragbatch.retrieval.retriever import Retriever

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable GPU")


@needs_cpu_only
def test_cpu_machine_auto_is_cpu_and_cuda_is_one_clear_error():
    assert pick_device("auto") == "cpu"
    assert pick_device("cpu") == "cpu"
    with pytest.raises(RagbatchError) as error:
        pick_device("cuda")
    message = str(error.value)
    assert message.startswith("device cuda: torch ") and "sees no usable CUDA GPU" in message and "\n" not in message
    assert isinstance(error.value, ParameterError) and error.value.param == "device"


def test_gpu_present_auto_and_cuda_are_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    assert pick_device("cuda") == "cuda"
    assert pick_device("cpu") == "cpu"


def test_unknown_device_is_refused():
    with pytest.raises(RagbatchError, match="device tpu: use auto, cpu or cuda"):
        pick_device("tpu")


def test_cpu_is_decided_without_importing_torch():
    code = "import sys; from ragbatch.models.devices import pick_device; pick_device('cpu'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"


@needs_cpu_only
def test_ask_and_search_refuse_cuda_on_a_cpu_machine(tmp_path):
    """The path `ask` takes: the device is decided (and refused) before any model loads."""
    (tmp_path / "a.txt").write_text("Fogg wagered twenty thousand pounds.\n")
    (tmp_path / "q.txt").write_text("How much did Fogg wager?\n")
    index([tmp_path / "a.txt"], tmp_path / "store")
    with pytest.raises(RagbatchError, match="^device cuda: torch "):
        ragbatch.ask(str(tmp_path / "q.txt"), tmp_path / "store", out=tmp_path / "a.parquet", device="cuda")
    with pytest.raises(RagbatchError, match="^device cuda: torch "):
        Retriever.open(tmp_path / "store", device="cuda")
