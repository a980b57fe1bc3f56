"""A minimal PEFT adapter folder for tests that only read its files."""

from __future__ import annotations

import json
from pathlib import Path


def make_adapter_folder(folder: Path, *, rank: int = 4) -> Path:
    """What the digest reads: a PEFT adapter_config.json and a real safetensors file."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight":
               np.full((rank, 8), 0.1, dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))
    return folder
