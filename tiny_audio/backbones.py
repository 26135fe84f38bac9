"""Backbone configs: from a local folder, from the copies bundled for well-known hub ids, or from the hub.

The bundled copies (tiny_audio/backbones/*.json, named OWNER--NAME.json) let `tiny-audio info` count the
parameters of the seed and default designs with no download and no weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig

BUNDLED = Path(__file__).parent / "backbones"


def bundled_config_path(model_id: str) -> Path:
    """Where the bundled config of a hub id would be (it may not exist)."""
    return BUNDLED / (model_id.replace("/", "--") + ".json")


def backbone_config(model_id: str) -> PreTrainedConfig:
    """Config of a backbone: local folder first, then a bundled copy, then the hub (network)."""
    if Path(model_id).is_dir():
        return AutoConfig.from_pretrained(model_id)
    bundled = bundled_config_path(model_id)
    if bundled.exists():
        data = json.loads(bundled.read_text())
        return AutoConfig.for_model(data.pop("model_type"), **data)
    try:
        return AutoConfig.from_pretrained(model_id)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot find the config of backbone {model_id!r}: not a local folder, not bundled with Tiny Audio, "
            f"and the Hugging Face Hub could not provide it ({err.__class__.__name__})"
        ) from None
