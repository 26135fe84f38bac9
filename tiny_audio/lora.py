"""LoRA on either backbone through peft: add adapters, pick out their weights, fold them into the base."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn


def apply_lora(
    module: nn.Module,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: list[str],
    task_type: str | None = None,
    layers: list[int] | None = None,
) -> nn.Module:
    """Wrap `module` with LoRA adapters of the given rank on `target_modules` (in the numbered `layers.N` blocks
    listed in `layers` only, when given); rank 0 returns it unchanged."""
    if rank <= 0:
        return module
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type=task_type,
        layers_to_transform=list(layers) if layers else None,
        layers_pattern="layers" if layers else None,
    )
    return get_peft_model(module, config)


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors of `module` (empty when it has no LoRA)."""
    return {k: v for k, v in module.state_dict().items() if "lora_" in k}


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the plain backbone with every adapter folded into its base weight (W + B A * alpha/r)."""
    if not isinstance(module, PeftModel):
        return module.state_dict()
    inner = module.get_base_model()
    deltas = {
        f"{name}.weight": layer.get_delta_weight(layer.active_adapters[0])
        for name, layer in inner.named_modules()
        if isinstance(layer, LoraLayer)
    }
    state = {}
    for key, value in inner.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = value + deltas[key].to(value.dtype) if key in deltas else value
    return state
