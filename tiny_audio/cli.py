"""The `tiny-audio` command (alias `ta`): a thin layer over the library.

tiny-audio info --preset seed
tiny-audio info path/to/model
tiny-audio transcribe clip.flac --model path/to/model
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tiny Audio: train, inspect and run your own speech recognizer (audio encoder -> projector -> LLM).",
)


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit code 2."""


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# ----------------------------------------------------------------------------------------------------- info
def _model_config(folder: str | None, preset: str | None, overrides: list[str]):
    from .backbones import backbone_config
    from .config import ASRConfig
    from .presets import load_preset

    if folder and preset:
        raise UserError("give a model folder or --preset, not both")
    if folder:
        if not (Path(folder) / "config.json").is_file():
            raise UserError(f"{folder}: not a saved Tiny Audio model folder (no config.json)")
        config = ASRConfig.from_pretrained(folder)
        source = folder
    else:
        data = load_preset(preset or "default", [o if o.startswith("model.") else f"model.{o}" for o in overrides])
        config = ASRConfig(**data.get("model", {}))
        source = f"preset {preset or 'default'}"
    if config.audio_config is None and config.audio_model_id:
        config.audio_config = backbone_config(config.audio_model_id)
    if config.text_config is None and config.text_model_id:
        config.text_config = backbone_config(config.text_model_id)
    return config, source


def _describe(config: Any, source: str) -> list[str]:
    a, t = config.audio_config, config.text_config
    k, c = config.projector_stack_size, a.hidden_size
    lora = []
    for side, prefix in (("encoder", "encoder_lora"), ("decoder", "decoder_lora")):
        rank = getattr(config, f"{prefix}_rank")
        if rank > 0:
            targets = ",".join(getattr(config, f"{prefix}_target_modules"))
            lora.append(f"{side} r={rank} alpha={getattr(config, f'{prefix}_alpha')} on {targets}")
        else:
            lora.append(f"{side} frozen")
    return [
        f"Tiny Audio model ({source})",
        f"  audio_tower     {config.audio_model_id or '(from config)'}  [{a.model_type}, width {c}, "
        f"{a.num_hidden_layers if hasattr(a, 'num_hidden_layers') else a.encoder_layers} layers]",
        f"  projector       stack {k}: {k * c} -> SwiGLU {config.projector_hidden_dim} -> {t.hidden_size}"
        f"{', RMSNorm pre/post' if config.projector_norm else ''}",
        f"  language_model  {config.text_model_id or '(from config)'}  [{t.model_type}, width {t.hidden_size}, "
        f"{t.num_hidden_layers} layers]",
        f"  LoRA            {'; '.join(lora)}",
        f"  prompt          system={config.system_prompt!r} user={config.user_prompt!r}",
        f"  generation      {', '.join(f'{k}={v}' for k, v in config.generation_defaults.items())}",
    ]


@app.command()
def info(
    folder: Annotated[str | None, typer.Argument(help="A saved model folder.")] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped preset name or a YAML file.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. projector_hidden_dim=4096", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parameter counts as JSON.")] = False,
) -> None:
    """Print a model's configuration and parameter counts per component (no weights are loaded)."""
    import torch

    from .model import ASRModel

    if folder and (preset or "=" in folder):  # `info --preset seed key=value`: the first override lands in FOLDER
        overrides, folder = [folder, *(overrides or [])], None
    config, source = _model_config(folder, preset, overrides or [])
    with torch.device("meta"):  # count parameters without allocating them
        model = ASRModel(config, load_backbones=False)
    report = model.parameter_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for line in _describe(config, source):
        typer.echo(line)
    typer.echo("")
    typer.echo(f"  {'component':<16}{'total':>16}{'trainable':>16}{'LoRA':>14}")
    for name, row in report.items():
        typer.echo(f"  {name:<16}{row['total']:>16,}{row['trainable']:>16,}{row['lora']:>14,}")
    share = report["total"]["trainable"] / report["total"]["total"]
    typer.echo(
        f"\n  trainable {report['total']['trainable'] / 1e6:,.1f}M of {report['total']['total'] / 1e9:,.2f}B "
        f"({share:.2%})"
    )


# ----------------------------------------------------------------------------------------------- transcribe
@app.command()
def transcribe(
    inputs: Annotated[list[Path], typer.Argument(help="Audio files or folders of audio files.")],
    model: Annotated[str, typer.Option("--model", "-m", help="A saved model folder or hub id.")],
    batch_size: Annotated[int, typer.Option(help="Clips per batch.")] = 1,
    max_new_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate per clip.")] = None,
    num_beams: Annotated[int | None, typer.Option(help="Beam width (1 = greedy).")] = None,
) -> None:
    """Transcribe audio files; bad files are reported one line each and the rest still run (exit 2)."""
    from .audio import AudioError, load_audio
    from .model import ASRModel

    files: list[Path] = []
    for item in inputs:
        files.extend(sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item])
    try:
        asr = ASRModel.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {model!r}: {err}") from None
    options = {k: v for k, v in {"max_new_tokens": max_new_tokens, "num_beams": num_beams}.items() if v is not None}
    failed = 0
    good: list[tuple[Path, Any]] = []
    for path in files:
        try:
            good.append((path, load_audio(path)))
        except AudioError as err:
            failed += 1
            typer.echo(f"error: {err}", err=True)
    for start in range(0, len(good), max(batch_size, 1)):
        chunk = good[start : start + max(batch_size, 1)]
        batch = asr.processor([a for _, a in chunk])
        texts = asr.processor.batch_decode(asr.generate(**batch, **options))
        for (path, _), text in zip(chunk, texts, strict=True):
            typer.echo(f"{path}\t{text}")
    if failed:
        raise typer.Exit(2)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2, never a traceback."""
    from .audio import AudioError

    # peft calls a transformers method that v5 deprecated; the warning is noise for CLI users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        app()
    except (UserError, AudioError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
