"""The Hugging Face Hub side: the model card (README.md) of an exported model.

    write_model_card("runs/mine/final", results=["eval/dev/runs-mine-final/results.json"])

The card's YAML metadata follows the Hub's model card format (license, base_model, datasets, pipeline_tag,
model-index with the evaluation results), so the Hub shows the results and links the base models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from .backbones import NAMED
from .config import ASRConfig


def _hub_id(model_id: str | None) -> str | None:
    """The hub model a backbone is, or copies (named offline backbones); local folders have none."""
    if model_id in NAMED:
        return NAMED[model_id].hub_id
    return model_id if model_id and not Path(model_id).exists() and "/" in model_id else None


def model_card(
    folder: str | Path,
    results: list[dict[str, Any]] | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
) -> str:
    """The README.md text for a saved model folder, with evaluation results if given."""
    folder = Path(folder)
    config = ASRConfig.from_pretrained(folder)
    name = repo_id or folder.resolve().name
    base_models = [m for m in (_hub_id(config.audio_model_id), _hub_id(config.text_model_id)) if m]
    eval_results = [
        EvalResult(
            task_type="automatic-speech-recognition",
            task_name="Speech Recognition",
            dataset_type=r.get("data") or "custom",
            dataset_name=str(r.get("data") or "custom"),
            metric_type="wer",
            metric_name="WER",
            metric_value=round(100 * r["wer"], 2),
        )
        for r in results or []
    ]
    data = ModelCardData(
        language=["en"],
        license=license,
        library_name="transformers",
        pipeline_tag="automatic-speech-recognition",
        tags=["tiny-audio", "speech", "asr", "audio"],
        base_model=base_models or None,
        datasets=datasets or None,
        model_name=name,
        eval_results=eval_results or None,
    )
    recipe_file = folder / "train_config.yaml"
    recipe = recipe_file.read_text() if recipe_file.is_file() else "(no train_config.yaml beside the weights)"
    report = _parameters(folder)
    rows = "\n".join(
        f"| {r.get('data', '-')} | {100 * r['wer']:.2f} | {100 * r.get('cer', 0):.2f} | {r['rtfx']:.1f} | "
        f"{r.get('device', '-')} |"
        for r in results or []
    )
    usage_id = repo_id or str(folder)
    body = f"""
# {name}

A speech recognizer built with Tiny Audio: the audio encoder
`{config.audio_model_id}` (frozen{", LoRA" if config.encoder_lora_rank else ""}) feeds a trainable projector
(stack {config.projector_stack_size} frames, RMSNorm -> SwiGLU {config.projector_hidden_dim} -> RMSNorm) into the
language model `{config.text_model_id}`{" with LoRA" if config.decoder_lora_rank else ""}.

## Usage

```python
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="{usage_id}", trust_remote_code=True)
print(asr("audio.flac")["text"])
```

## Parameters

| component | total | trainable |
|---|---:|---:|
{report}

## Evaluation

WER and CER after Whisper's English text normalizer on reference and hypothesis (`tiny-audio eval`).

| data | WER % | CER % | RTFx | device |
|---|---:|---:|---:|---|
{rows or "| (not evaluated yet) | | | | |"}

## Training recipe

```yaml
{recipe.strip()}
```

## Limitations

- English only, trained on read speech; expect higher error rates on spontaneous, noisy or accented speech.
- Like other LLM-decoder recognizers it can produce fluent text that was not said (hallucination), most
  likely on silence, music or very noisy audio; check transcripts where mistakes matter.
- Long audio is transcribed in windows of `chunk_length_s` seconds joined together; words cut at a window
  boundary can be garbled.
"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def _parameters(folder: Path) -> str:
    from .model import count_parameters

    report = count_parameters(ASRConfig.from_pretrained(folder))
    return "\n".join(f"| {name} | {row['total']:,} | {row['trainable']:,} |" for name, row in report.items())


def write_model_card(folder: str | Path, results: list[str | Path] | None = None, **kwargs: Any) -> Path:
    """Write README.md into a model folder; `results` are results.json paths from `tiny-audio eval`."""
    loaded = [json.loads(Path(p).read_text()) for p in results or []]
    path = Path(folder) / "README.md"
    path.write_text(model_card(folder, loaded, **kwargs))
    return path


def card_metadata(text: str) -> dict[str, Any]:
    """The YAML metadata block of a model card."""
    return yaml.safe_load(text.split("---", 2)[1])
