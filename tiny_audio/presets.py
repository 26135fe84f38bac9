"""Presets: small YAML files that mirror the config dataclasses, overridable with `section.key=value`.

load_preset("seed", ["model.projector_hidden_dim=2048"])  ->  {"model": {...}}

A preset may start from another with `extends: NAME` (a shipped preset or a YAML path): its sections are the
other's, with the keys it lists replaced (lists replace whole, not append).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRESETS = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML, so 1e-4, true and [q_proj, v_proj] get their types)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ValueError(f"override {item!r} has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `section.key=value` in the nested dict; unknown sections or keys are an error."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                known = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                raise KeyError(f"override {item!r}: no section {'.'.join(path[: i + 1])!r} (sections: {known})")
            node = node[part]
        node[path[-1]] = value
    return data


def load_preset(name_or_path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a shipped preset by name, or any YAML file, and apply overrides."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PRESETS / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no preset or YAML file {str(name_or_path)!r}; shipped presets: {', '.join(preset_names())}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a YAML mapping of sections")
    if "extends" in data:
        base = load_preset(data.pop("extends"))
        for section, keys in data.items():
            base[section] = {**base.get(section, {}), **(keys or {})}
        data = base
    return apply_overrides(data, overrides or [])
