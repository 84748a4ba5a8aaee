import os

# Tests never reach the real Hugging Face hub (it is not reachable here, and a test must not
# depend on it): the tests of downloading run a fake hub in a subprocess without this.
os.environ["HF_HUB_OFFLINE"] = "1"

# --- generation: the packaged LLM, converted once per cache and loaded once per session ---
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def llm_folder():
    """The packaged SmolLM2 as a Hugging Face folder (converted on first use, then cached)."""
    from ragbatch.models import resolve_llm

    return resolve_llm(None)


@pytest.fixture(scope="session")
def llm_generator(llm_folder):
    """One vLLM engine for the whole session: loading it takes seconds and ~1.5 GB."""
    from ragbatch.generation import Generator
    from ragbatch.models import DEFAULT_LLM

    generator = Generator(llm_folder, max_model_len=2048, name=DEFAULT_LLM)
    yield generator
    generator.close()


# --- a real Chroma server (`chroma run`) for stores whose vectors live on one ---
@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    from chroma_process import ChromaServer

    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server
