"""The Hugging Face Hub side: the model card (README.md) of an exported model, and publishing it.

    write_model_card("runs/mine/final", results=["eval/dev/runs-mine-final/results.json"])
    push("runs/mine", "me/tiny-audio-mine")  # export, card, upload

The card's YAML metadata follows the Hub's model card format (license, base_model, datasets, pipeline_tag,
model-index with the evaluation results), so the Hub shows the results and links the base models.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from .backbones import NAMED
from .config import ASRConfig
from .ctc import LEXICON_NAME, LEXICON_NOTICE, Lexicon
from .peers import Decoding


def _hub_id(model_id: str | None) -> str | None:
    """The hub model a backbone is, or copies (named offline backbones); local folders have none."""
    if model_id in NAMED:
        return NAMED[model_id].hub_id
    return model_id if model_id and not Path(model_id).exists() and "/" in model_id else None


# A training stage's evidence beside a shipped model's weights (training/stageN_<name> for the earlier stages).
STAGE_FILES = {"log": "log_history.json", "config": "train_config.yaml", "curves": "curves.png"}


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
    results = results or []
    # Peers evaluated in the same run (faster-whisper, ...) are a comparison in the table, never this model's score.
    own = [r for r in results if r.get("system", "tiny-audio") == "tiny-audio"]

    decodings = {Decoding.of(r) for r in own}

    def label(r: dict[str, Any]) -> str:
        if r not in own:
            return r.get("model", "-")
        if len(decodings) == 1:
            return "this model"
        decoding = Decoding.of(r)
        return ", ".join(["this model" + ("" if decoding.num_beams > 1 else ", greedy"), *decoding.parts()])

    labels = [label(r) for r in results]
    # The Hub's model-index lists the score of the model as it runs by default (its own decoding).
    default = Decoding.of(config.generation_defaults, has_head=bool(config.ctc_head_dim))
    if default.ctc_lexicon_penalty and not (folder / LEXICON_NAME).is_file():
        default = replace(default, ctc_lexicon_penalty=0.0)  # without lexicon.txt the card claims none
    indexed = [r for r in own if Decoding.of(r) == default] or own
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
        for r in indexed
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
        f"| {label} | {r.get('data', '-')} | {100 * r['wer']:.2f} | {100 * r.get('cer', 0):.2f} | {r['rtfx']:.1f} | "
        f"{r.get('device', '-')} |"
        for label, r in zip(labels, results, strict=True)
    )
    sources = sorted({s for r in results for s in r.get("by_source", {})})
    by_source = ""
    if sources:
        lines = [f"| source | {' | '.join(labels)} |", f"|---|{'---:|' * len(results)}"]
        for source in sources:
            wers = [r.get("by_source", {}).get(source, {}).get("wer") for r in results]
            lines.append(f"| {source} | " + " | ".join("-" if w is None else f"{100 * w:.2f}" for w in wers) + " |")
        by_source = "\n\nWER % by source:\n\n" + "\n".join(lines)
    usage_id = repo_id or str(folder)
    decoding = (
        f"\nIt decodes with beam search of width {default.num_beams} by default (`generation_defaults` in"
        " `config.json`);"
        f' `asr("audio.flac", num_beams=1)` decodes greedily, faster.\n'
        if default.num_beams > 1
        else ""
    )
    if default.ctc_head_weight:
        top = config.ctc_head_encoder_layers
        frames = (
            f"its own fine-tuned copy of the encoder's top {top} layer{'s' if top > 1 else ''}"
            if top
            else "the encoder frames"
        )
        decoding += (
            f"\nA character CTC head on {frames} checks each token the language model proposes against the"
            f" audio (joint CTC / LLM decoding, weight {default.ctc_head_weight:g});"
            f' `asr("audio.flac", ctc_head_weight=0)` decodes with the language model alone.\n'
        )
    if not default.ctc_word_gaps:
        decoding += (
            "\nThe head checks the letters only (`ctc_word_gaps` false): where one word ends and the next begins is"
            " the language model's call.\n"
        )
    if default.ctc_lexicon_penalty:
        notice = folder / LEXICON_NOTICE
        count = len(Lexicon.load(folder / LEXICON_NAME))
        decoding += (
            f"\nIn joint decoding each word outside the model's lexicon (`{LEXICON_NAME}`, {count:,} words) costs"
            f" {default.ctc_lexicon_penalty:g} (`ctc_lexicon_penalty`; 0 turns it off)"
            + (f": the word list's origin and licence are in `{LEXICON_NOTICE}`.\n" if notice.is_file() else ".\n")
        )
    if default.lm_rescore_weight or default.ctc_rescore_weight != default.ctc_head_weight:
        parts, off = [], ["lm_rescore_weight=0"]
        if default.lm_rescore_weight:
            parts.append(
                f"{default.lm_rescore_weight:g} x its log-probability under the language model without LoRA"
                " (`lm_rescore_weight`)"
            )
        if default.ctc_rescore_weight != default.ctc_head_weight:
            parts.append(
                f"the CTC head's log-probability of it weighing {default.ctc_rescore_weight:g} instead of the search's"
                f" {default.ctc_head_weight:g} (`ctc_rescore_weight`)"
            )
            off.append(f"ctc_rescore_weight={default.ctc_head_weight:g}")
        decoding += (
            "\nThe beam's finished hypotheses are then ranked again: each gets its beam score plus "
            + ", with ".join(parts)
            + f'; `asr("audio.flac", {", ".join(off)})` keeps the beam\'s own best.\n'
        )
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
{decoding}
## Parameters

| component | total | trainable |
|---|---:|---:|
{report}

## Evaluation

WER and CER after Whisper's English text normalizer on reference and hypothesis (`tiny-audio eval`).

| model | data | WER % | CER % | RTFx | device |
|---|---|---:|---:|---:|---|
{rows or "| (not evaluated yet) | | | | | |"}{by_source}

{_stages(folder)}## Training recipe

```yaml
{recipe.strip()}
```

## Limitations

- English only, trained on read speech; expect higher error rates on spontaneous, noisy or accented speech.
- Like other LLM-decoder recognizers it can produce fluent text that was not said (hallucination), most
  likely on silence, music or very noisy audio; check transcripts where mistakes matter.
- Long audio is transcribed in windows of at most `chunk_length_s` seconds cut in pauses; speech with no
  pause near a window limit can still have a word split at the cut.
"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def training_stages(folder: str | Path) -> list[dict[str, Path]]:
    """The training stages whose evidence lies beside a model's weights, first first, each {config, log, curves}:
    training/stageN_* for the earlier ones (written by scripts/ship_default.py), then the folder's own recipe
    with training/log_history.json and curves.png. Empty without a train_config.yaml."""
    folder = Path(folder)
    evidence = folder / "training"
    if not (folder / "train_config.yaml").is_file():
        return []
    earlier = sorted(evidence.glob("stage*_train_config.yaml"), key=lambda p: int(p.name[5:].split("_")[0]))
    stages = [
        {kind: evidence / p.name.replace("train_config.yaml", name) for kind, name in STAGE_FILES.items()}
        for p in earlier
    ]
    last = {
        "config": folder / "train_config.yaml",
        "log": evidence / "log_history.json",
        "curves": evidence / "curves.png",
    }
    return [*stages, last]


def _stages(folder: Path) -> str:
    """A table of the training stages whose evidence lies beside the weights, or "" for a one-stage model."""
    stages = training_stages(folder)
    if len(stages) < 2:
        return ""
    lines = [
        "| stage | run | started from | training data | lr | epochs | steps | dev loss |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for number, stage in enumerate(stages, start=1):
        config = yaml.safe_load(stage["config"].read_text())
        t, d = config.get("training", {}), config.get("data", {})
        history = json.loads(stage["log"].read_text()) if stage["log"].is_file() else []
        steps = max((h.get("step", 0) for h in history), default=0)
        losses = [h["eval_loss"] for h in history if "eval_loss" in h]
        started = Path(t["init_from"]).as_posix() if t.get("init_from") else "the backbones"
        if t.get("average_with"):
            started += "; final = mean with " + ", ".join(Path(f).as_posix() for f in t["average_with"])
        weights = d.get("train_weights") or [1.0] * len(d.get("train", []))
        data = ", ".join(f"{s} x{w:g}" for s, w in zip(d.get("train", []), weights, strict=False))
        loss = f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"
        lines.append(
            f"| {number} | {Path(t.get('output_dir', '-')).name} | {started} | {data} | {t.get('learning_rate', '-')} "
            f"| {t.get('num_train_epochs', '-')} | {steps} | {loss} |"
        )
    return (
        "## Training stages\n\nEach stage continued from the one before; their configs, logs and curves are in "
        "`training/` beside the weights, the last stage's recipe below.\n\n" + "\n".join(lines) + "\n\n"
    )


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


# ------------------------------------------------------------------------------------------------- publishing
class PushError(Exception):
    """Publishing cannot go ahead (no token, no network, nothing to publish); nothing was uploaded."""


# What a Trainer checkpoint holds beside the model: needed to resume training, useless (and large) on the Hub.
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin", "rng_state")


def model_folder(path: str | Path) -> Path:
    """The saved model a path names: a model folder or checkpoint itself, or a training run's output folder
    (its final model, else its last complete checkpoint)."""
    from .model import WEIGHTS_NAME
    from .train import last_complete_checkpoint

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such model folder, checkpoint or training run: {path}")
    if (path / WEIGHTS_NAME).is_file() and (path / "config.json").is_file():
        return path
    if (path / "final" / WEIGHTS_NAME).is_file():
        return path / "final"
    checkpoint = last_complete_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"{path} holds no saved model: expected {WEIGHTS_NAME} + config.json, a final/ "
                                "model or a complete checkpoint-N/")  # fmt: skip
    return checkpoint


def _portable(model_id: str | None) -> bool:
    """A backbone the Hub can name: a hub id (not an offline named copy, not a local folder)."""
    return bool(model_id) and model_id not in NAMED and not Path(model_id).exists()


def export_for_hub(source: str | Path, target: str | Path, include_base_weights: bool | None = None) -> Path:
    """Write the publishable form of a saved model into `target`: no trainer state, and backbones anyone can
    load. `include_base_weights=None` includes them unless both backbones are hub ids: offline copies (converted
    or quantized) and local folders exist only on this machine, and the published numbers were measured with
    exactly those weights. `False` with named offline backbones names their hub originals instead."""
    source, target = model_folder(source), Path(target)
    config = ASRConfig.from_pretrained(source)
    ids = (config.audio_model_id, config.text_model_id)
    include = include_base_weights
    if include is None:
        include = not config.base_weights_included and not all(_portable(i) for i in ids)
    local = [i for i in ids if i and i not in NAMED and Path(i).exists()]
    if include is False and local and not config.base_weights_included:
        raise PushError(f"backbone {local[0]} is a folder on this machine; publish with the base weights included")
    target.mkdir(parents=True, exist_ok=True)
    if include and not config.base_weights_included:
        from .model import ASRModel

        ASRModel.from_pretrained(source).save_pretrained(target, include_base_weights=True)
        for extra in ("train_config.yaml",):
            if (source / extra).is_file():
                shutil.copy2(source / extra, target / extra)
        return target
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith(TRAINER_FILES) and item.name != "README.md":
            shutil.copy2(item, target / item.name)
    if not config.base_weights_included and any(i in NAMED for i in ids):
        data = json.loads((target / "config.json").read_text())
        for key in ("audio_model_id", "text_model_id"):
            if data.get(key) in NAMED:
                data[key] = NAMED[data[key]].hub_id
        (target / "config.json").write_text(json.dumps(data, indent=2) + "\n")
    return target


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures as raised by whichever HTTP client this huggingface_hub uses (httpx2, httpx)."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def hub_token(token: str | None = None) -> str:
    """The token to publish with: given, else HF_TOKEN, else the one `hf auth login` stored."""
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def push(
    path: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    results: list[str | Path] | None = None,
    include_base_weights: bool | None = None,
    commit_message: str = "Upload Tiny Audio model",
) -> str:
    """Export a model folder, checkpoint or training run, write its model card and upload it to the Hub repo
    `repo_id` (created if missing). The token and the connection are checked before anything is sent; returns
    the repo's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    source = model_folder(path)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"--repo-id must look like USER/NAME or ORG/NAME, got {repo_id!r}")
    api = HfApi(endpoint=endpoint, token=hub_token(token))
    try:
        user = api.whoami()
    except OfflineModeIsEnabled:
        raise PushError("HF_HUB_OFFLINE is set: unset it to publish") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise PushError(f"the Hub at {api.endpoint} refused the token (HTTP {status}): {err}") from None
    except _network_errors() as err:  # connection refused, DNS failure, timeout
        raise PushError(f"cannot reach the Hub at {api.endpoint}: {type(err).__name__}: {err}") from None
    with tempfile.TemporaryDirectory(prefix="tiny-audio-push-") as staging:
        folder = export_for_hub(source, staging, include_base_weights)
        write_model_card(folder, results, repo_id=repo_id)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message=commit_message)
        except HfHubHTTPError as err:
            raise PushError(f"upload to {repo_id} failed (logged in as {user.get('name', '?')}): {err}") from None
        except _network_errors() as err:
            raise PushError(f"upload to {repo_id} failed: {type(err).__name__}: {err}") from None
    return str(url)
