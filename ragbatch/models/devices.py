"""Which device a model runs on: the one rule every command uses for its `device`.

`auto` is cuda when the installed torch can use a GPU (`torch.cuda.is_available()`, which
honours CUDA_VISIBLE_DEVICES), else cpu. torch is imported only here and only when a
device must actually be decided, never when the CLI starts.
"""

from __future__ import annotations

from ragbatch.errors import ParameterError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(requested: str = "auto") -> str:
    """ "cpu" or "cuda" for the `requested` device; a clear error for cuda without a usable GPU."""
    if requested not in DEVICES:
        raise ParameterError("device", requested, "use auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ParameterError(
            "device",
            "cuda",
            f"torch {torch.__version__} sees no usable CUDA GPU (a CPU-only torch build, no driver, or CUDA_VISIBLE_DEVICES hides it); use device cpu or auto",
        )
    return "cpu"


def model_dtype(device: str) -> str:
    """The dtype models run in on `device` ("cpu" or "cuda"): bf16 on GPUs that compute it
    (Ampere and later), fp16 on older ones, float32 on the CPU. T5 encoders such as
    instructor-large overflow in fp16, so bf16 is the one to prefer."""
    if device != "cuda":
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
