"""Training: a preset (YAML mirroring TrainConfig) + key=value overrides -> transformers Trainer run.

    tiny-audio train smoke training.max_steps=20 --output-dir runs/smoke
    tiny-audio train default --resume

Stages: `training.stage` picks what trains: "projector", "decoder" (projector + decoder LoRA), "encoder"
(projector + both LoRA sides) or "all" (everything that exists); `training.init_from` starts from the trained
weights of an earlier stage's output. Checkpoints hold only the trained weights plus the resolved config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from .augment import AugmentConfig, WaveformAugmenter, make_silence_clips
from .backbones import cache_dir
from .config import ASRConfig
from .data import (
    SpeechCollator,
    SpeechDataset,
    StreamingSpeechDataset,
    hf_text_column,
    load_source,
    open_hf_dataset,
    read_clip,
)
from .encoder import frozen_layers_below
from .evaluate import word_error_rate
from .features import FeatureCache
from .model import WEIGHTS_NAME, ASRModel
from .presets import apply_overrides, load_preset
from .soup import average_states
from .transcribe import transcribe_arrays

STAGES = ("projector", "decoder", "encoder", "all")
SECTIONS = ("model", "data", "training", "augment")
CONFIG_NAME = "train_config.yaml"


@dataclass
class DataConfig:
    """Where the speech comes from and which rows are used."""

    train: list[str] = field(default_factory=lambda: ["train/manifest.jsonl"])  # manifests or folders
    train_weights: list[float] | None = None  # per source: each row appears this many times per epoch on average
    dev: str | None = "dev/manifest.jsonl"  # for dev loss; None to skip evaluation
    max_train_samples: int | None = None  # first N rows after filtering (smoke runs, overfitting checks)
    max_dev_samples: int | None = 64
    min_duration_s: float = 0.2
    max_duration_s: float = 30.0  # the Whisper encoder's window
    text_field: str = "text"  # manifest field holding the target transcript
    normalize_text: bool = False  # train on Whisper-normalized targets (lower case, numbers as digits, ...)
    sentence_case: bool = False  # rewrite ALL-CAPS transcripts (LibriSpeech, AN4) in sentence case, see below
    # Hugging Face datasets: sources "hf:NAME[:CONFIG[:SPLIT]]" or save_to_disk folders
    audio_column: str = "audio"
    text_column: str | None = None  # None: the first of text, sentence, transcription, transcript, normalized_text
    train_split: str = "train"  # split of a saved DatasetDict (or a hub dataset named without one)
    dev_split: str = "validation"
    streaming: bool = False  # stream a hub dataset instead of downloading it (one source; needs max_steps)


@dataclass
class TrainingConfig:
    """Optimisation and bookkeeping (passed on to transformers' TrainingArguments)."""

    output_dir: str = "runs/tiny-audio"
    stage: str = "all"  # projector | decoder | encoder | all
    init_from: str | None = None  # an earlier stage's output folder or checkpoint
    # Run outputs or checkpoints of this design: the final model is the mean of this run's last weights and theirs
    # (a model soup), e.g. the stage it continued from. Applied once training ends; the checkpoints stay the run's own.
    average_with: list[str] = field(default_factory=list)
    # Auxiliary CTC loss that asks each projected audio frame to resemble the LLM embedding of the token spoken
    # there (ASRModel._ctc_alignment_loss), added to the LM loss at this weight during training; 0: off.
    ctc_weight: float = 0.0
    ctc_blank_token: str = "<|endoftext|>"  # the CTC blank: a token of the LLM's vocabulary no transcript contains
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "cosine"
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    group_by_length: bool = True  # batches of similar duration waste less padding
    # None: bf16 on a GPU that supports it, fp32 otherwise. true on a CPU is autocast: x1.6 per step where the CPU
    # has bf16 matrix units (AMX, AVX512-BF16), slower elsewhere.
    bf16: bool | None = None
    logging_steps: int = 10
    eval_steps: int | None = None  # None: once per epoch
    eval_on_start: bool = True  # a step-0 evaluation, so the curves start from the untrained model
    eval_wer_samples: int = 16  # dev clips transcribed at each evaluation for normalized WER (0: none)
    # None: on when the audio tower does not train in this stage, or only a Whisper tower's top layers do (the
    # cache then holds the hidden states below them)
    feature_cache: bool | None = None
    save_steps: int = 500
    save_total_limit: int = 3
    seed: int = 42
    dataloader_num_workers: int = 0
    report_to: list[str] = field(default_factory=lambda: ["auto"])  # auto: see logging_backends()


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as train_config.yaml with every checkpoint."""

    model: dict[str, Any] = field(default_factory=dict)  # ASRConfig fields
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(values: dict[str, Any], cls: type, name: str) -> dict[str, Any]:
    """YAML 1.1 reads 1e-4 as a string: convert numbers (and booleans) by the dataclass field's type."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = dict(values)
    for key, value in values.items():
        kind = types.get(key, "")
        if not isinstance(value, str):
            continue
        try:
            if kind.startswith("float"):
                out[key] = float(value)
            elif kind.startswith("int"):
                out[key] = int(float(value)) if float(value).is_integer() else value
        except ValueError:
            raise ValueError(f"{name}.{key} must be a number, got {value!r}") from None
    return out


def _section(cls: type, values: dict[str, Any], name: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KeyError(f"unknown {name} setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**_coerce(values, cls, name))


def load_train_config(preset_or_yaml: str, overrides: list[str] | None = None) -> TrainConfig:
    """Read a preset or YAML file, apply `section.key=value` overrides and check every key."""
    data = load_preset(preset_or_yaml)
    for section in SECTIONS:  # a YAML may leave sections out; overrides can still set them
        data[section] = data.get(section) or {}
    apply_overrides(data, overrides or [])
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise KeyError(f"unknown section(s) {', '.join(unknown)}: a training config has model, data, training, augment")
    model = dict(data.get("model") or {})
    known_model = {f.name for f in dataclasses.fields(ASRConfig)}
    bad = sorted(set(model) - known_model)
    if bad:
        raise KeyError(f"unknown model setting(s): {', '.join(bad)}")
    config = TrainConfig(
        model=_coerce(model, ASRConfig, "model"),
        data=_section(DataConfig, dict(data.get("data") or {}), "data"),
        training=_section(TrainingConfig, dict(data.get("training") or {}), "training"),
        augment=_section(AugmentConfig, dict(data.get("augment") or {}), "augment"),
    )
    if config.training.stage not in STAGES:
        raise ValueError(f"training.stage must be one of {', '.join(STAGES)}, got {config.training.stage!r}")
    if isinstance(config.data.train, str):
        config.data.train = [config.data.train]
    return config


# ---------------------------------------------------------------------------------------------------- model
def sentence_case(text: str) -> str:
    """ALL-CAPS text in sentence case ("HER MOTHER WAS" -> "Her mother was"; the pronoun I stays upper case).

    Capitals cost the LLM's tokenizer about twice the tokens and are far from the text it was trained on, and
    mixing them with the cased sources teaches it two spellings of every word; other text is left alone.
    """
    if text != text.upper() or not any(c.isalpha() for c in text):
        return text
    words = [("I" + w[1:] if w == "i" or w.startswith("i'") else w) for w in text.lower().split()]
    out = " ".join(words)
    return out[:1].upper() + out[1:]


def _load_source(source: str, d: DataConfig, split: str) -> tuple[list[dict[str, Any]], Any]:
    rows, report = load_source(
        source, split, d.min_duration_s, d.max_duration_s, d.text_field, d.normalize_text, d.audio_column, d.text_column
    )
    if d.sentence_case and not d.normalize_text:
        rows = [{**row, "text": sentence_case(row["text"])} for row in rows]
    return rows, report


def set_stage(model: ASRModel, stage: str) -> None:
    """Mark what trains in this stage; everything else is frozen."""
    for name, param in model.named_parameters():
        if name.startswith("projector."):
            param.requires_grad = True
        elif "lora_" in name:
            side_trains = {"decoder": name.startswith("language_model."), "encoder": True, "all": True}
            param.requires_grad = side_trains.get(stage, False)
        else:
            param.requires_grad = False


def trained_weights_file(folder: str | Path, setting: str) -> Path:
    """The trained-weights file of a run output or checkpoint that `setting` names; an error if it has none."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{setting}: {folder} has no {WEIGHTS_NAME}")
    return path


def read_trained_weights(model: ASRModel, folder: str | Path, setting: str) -> dict[str, torch.Tensor]:
    """A folder's trained weights, checked to fit `model`: no tensor it lacks, every shape its own."""
    state = load_file(str(trained_weights_file(folder, setting)))
    expected = model.trained_state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"{setting}: {folder} does not fit this model (e.g. {unexpected[:3]})")
    for key, value in state.items():
        if expected[key].shape != value.shape:
            raise ValueError(
                f"{setting}: {key} in {folder} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    return state


def load_trained_weights(model: ASRModel, folder: str | Path) -> list[str]:
    """Load an earlier stage's trained weights; returns the trained tensors it did not have (e.g. new LoRA)."""
    state = read_trained_weights(model, folder, "training.init_from")
    model.load_state_dict(state, strict=False)
    return sorted(set(model.trained_state_dict()) - set(state))


def _no_update(own: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """LoRA factors for modules an earlier stage did not have (this run added them): B = 0 (that stage's update on
    them is zero) and this run's own A, so averaging factor by factor gives exactly the mean of the updates
    (w * B @ A), which a random or zero A would not."""
    return {key: torch.zeros_like(own[key]) if "lora_B" in key else own[key] for key in keys}


def average_trained_weights(model: ASRModel, folders: list[str | Path]) -> None:
    """Replace the model's trained weights (projector and LoRA) by their mean with those saved in `folders`.

    Each tensor is averaged on its own, LoRA's A and B factors too: for runs on one trajectory (a stage and the one
    it continued from) the factors stay close, so this is near the mean of the updates; check the result on dev.
    """
    own = {key: value.detach() for key, value in model.trained_state_dict().items()}
    states = [own]
    for folder in folders:
        state = read_trained_weights(model, folder, "training.average_with")
        missing = sorted(set(own) - set(state))
        if any("lora_" not in key for key in missing):
            missing = [key for key in missing if "lora_" not in key]
            raise ValueError(f"training.average_with: {folder} lacks trained tensors of this run (e.g. {missing[:3]})")
        state.update(_no_update(own, missing))
        states.append(state)
    model.load_state_dict(average_states(states), strict=False)


def build_model(config: TrainConfig) -> ASRModel:
    """The model for this run: backbones, the stage's trainable parts, earlier-stage weights."""
    model = ASRModel(ASRConfig(**config.model))
    if config.training.init_from:
        load_trained_weights(model, config.training.init_from)
    set_stage(model, config.training.stage)
    if config.training.ctc_weight > 0:
        tokenizer = model.processor.tokenizer
        blank = tokenizer.convert_tokens_to_ids(config.training.ctc_blank_token)
        known = blank is not None and tokenizer.convert_ids_to_tokens(blank) == config.training.ctc_blank_token
        if not known or blank >= model.get_input_embeddings().num_embeddings:
            raise ValueError(
                f"training.ctc_blank_token {config.training.ctc_blank_token!r} is not a token of this LLM's "
                "vocabulary; name one that no transcript contains, e.g. its end-of-text token"
            )
        model.ctc_weight, model.ctc_blank_id = config.training.ctc_weight, blank
    return model


# ---------------------------------------------------------------------------------------------------- run
class ASRTrainer(Trainer):
    """Trainer whose length-grouped sampler takes clip durations from the manifest instead of loading clips."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, SpeechDataset):
            size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(size, lengths=dataset.lengths)
        return super()._get_train_sampler(train_dataset)

    wer_rows: list[dict[str, Any]] = []  # dev rows transcribed at each evaluation

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ctc_losses: list[float] = []  # the CTC alignment loss of each training batch since the last log

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        unwrapped = self.accelerator.unwrap_model(model)
        if unwrapped.last_ctc_loss is not None:
            self._ctc_losses.append(unwrapped.last_ctc_loss)
            unwrapped.last_ctc_loss = None
        return result

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Adds the mean CTC alignment loss to each training log line, when that loss is on."""
        if self._ctc_losses and "loss" in logs:
            logs["ctc_loss"] = round(sum(self._ctc_losses) / len(self._ctc_losses), 4)
            self._ctc_losses = []
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Dev loss, plus normalized WER of greedy transcripts of the first dev clips."""
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.wer_rows:
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            audio = [read_clip(row["audio"], model.config.sample_rate) for row in self.wer_rows]
            hyps = [t.text for t in transcribe_arrays(model, audio, batch_size=self.args.per_device_eval_batch_size)]
            model.train(was_training)
            score = word_error_rate([row["text"] for row in self.wer_rows], hyps)
            metrics[f"{metric_key_prefix}_wer"] = score["wer"]
            self.log({f"{metric_key_prefix}_wer": score["wer"]})
        return metrics

    def _get_eval_sampler(self, eval_dataset):
        return torch.utils.data.SequentialSampler(eval_dataset)  # evaluation order does not matter; keep it cheap


class SaveConfigCallback(TrainerCallback):
    """Writes the resolved training config into every checkpoint folder, last and atomically: its presence marks
    a checkpoint whose every file was written (a run killed mid-save leaves a folder without it)."""

    def __init__(self, config: TrainConfig):
        self.text = yaml.safe_dump(config.to_dict(), sort_keys=False)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                tmp = folder / f".{CONFIG_NAME}.tmp"
                tmp.write_text(self.text)
                os.replace(tmp, folder / CONFIG_NAME)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint-N folder that was written completely (see SaveConfigCallback)."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / CONFIG_NAME).is_file() and p.name[11:].isdigit()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def check_output_dir(folder: Path, needed_gb: float = 1.0) -> None:
    """Fail before training when the output folder cannot be written or the disk is nearly full."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A probe of its own per process: under torchrun every rank runs this at once, and a
        # shared name let one rank delete the file between another's write and unlink.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(f"cannot write to the output folder {folder}: {err.strerror}") from None
    free = shutil.disk_usage(folder).free / 2**30
    if free < needed_gb:
        raise OSError(f"only {free:.2f} GiB free at {folder}; checkpoints need about {needed_gb:.1f} GiB")


def logging_backends(requested: list[str]) -> list[str]:
    """["auto"] -> TensorBoard, plus trackio when installed (local, no account) and W&B when installed with
    WANDB_API_KEY set (so a run never stops to ask for a login); ["none"] -> no logging; else as given."""
    if requested == ["auto"]:
        import importlib.util

        backends = ["tensorboard"]
        if importlib.util.find_spec("trackio"):
            backends.append("trackio")
        if importlib.util.find_spec("wandb") and os.environ.get("WANDB_API_KEY"):
            backends.append("wandb")
        return backends
    return [r for r in requested if r != "none"]


def training_arguments(config: TrainConfig, output_dir: Path, has_dev: bool) -> TrainingArguments:
    t = config.training
    bf16 = t.bf16 if t.bf16 is not None else (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    eval_strategy = "no" if not has_dev else ("steps" if t.eval_steps else "epoch")
    # Launched by torchrun/accelerate on a machine without CUDA: accelerate needs cpu=True and gloo to see the
    # processes as one data-parallel job (otherwise each would train alone on all the data).
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # bf16 without CUDA is CPU autocast, which the Trainer runs only when told to stay on the CPU.
    cpu_bf16 = bf16 and not torch.cuda.is_available()
    return TrainingArguments(
        use_cpu=multi_cpu or cpu_bf16,
        ddp_backend="gloo" if multi_cpu else None,
        output_dir=str(output_dir),
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        activation_checkpointing=t.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        bf16=bf16,
        logging_steps=t.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        eval_on_start=has_dev and t.eval_on_start,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,  # items are raw audio + text; the collator builds model inputs
        report_to=logging_backends(t.report_to),
    )


def train(
    config: TrainConfig,
    output_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> Path:
    """Run training; returns the folder of the final model (output_dir/final)."""
    output_dir = Path(output_dir or config.training.output_dir)
    config.training.output_dir = str(output_dir)
    check_output_dir(output_dir)
    for folder in config.training.average_with:  # a missing one should stop the run now, not after hours
        trained_weights_file(folder, "training.average_with")
    set_seed(config.training.seed)

    d = config.data
    weights = d.train_weights or [1.0] * len(d.train)
    if len(weights) != len(d.train) or any(w < 0 for w in weights):
        raise ValueError(f"data.train_weights needs one non-negative weight per source in data.train ({len(d.train)})")
    rows, reports = [], []
    rng = random.Random(config.training.seed)
    streamed = None
    if d.streaming:
        if len(d.train) != 1 or not str(d.train[0]).startswith("hf:") or config.training.max_steps <= 0:
            raise ValueError("data.streaming needs exactly one hf:NAME source and training.max_steps > 0")
        ds = open_hf_dataset(d.train[0], d.train_split, streaming=True, audio_column=d.audio_column)
        streamed = (ds, hf_text_column(ds, d.text_column))
    for source, weight in zip([] if streamed else d.train, weights, strict=False):
        part, report = _load_source(source, d, d.train_split)
        # Mixing by repetition: whole copies, then a seeded sample for the fraction (deterministic for --resume).
        whole, fraction = divmod(weight, 1.0)
        rows += part * int(whole) + rng.sample(part, round(fraction * len(part)))
        reports.append(report)
    if d.max_train_samples:
        rows = rows[: d.max_train_samples]
    aug = config.augment
    if aug.silence_share > 0:  # silence and noise clips with an empty target
        silence = make_silence_clips(
            cache_dir() / "silence", round(aug.silence_share * len(rows)), seed=config.training.seed
        )
        rows += silence
        print(f"data: added {len(silence)} silence/noise clips with empty targets")
    if not rows and not streamed:
        raise ValueError("no training rows left after filtering: " + "; ".join(map(str, reports)))
    dev_rows = []
    if d.dev:
        dev_rows, report = _load_source(d.dev, d, d.dev_split)
        reports.append(report)
        dev_rows = dev_rows[: d.max_dev_samples] if d.max_dev_samples else dev_rows
    for report in reports:
        print(f"data: {report}")

    model = build_model(config)
    report = model.parameter_report()["total"]
    print(f"model: {report['trainable']:,} trainable of {report['total']:,} parameters (stage {config.training.stage})")
    args = training_arguments(config, output_dir, has_dev=bool(dev_rows))
    args.device  # noqa: B018 - sets up the process group now, so main_process_first below can wait on it
    cache = None
    tower_trains = any(p.requires_grad for p in model.audio_tower.parameters())
    # When only a Whisper tower's top layers train, the frozen layers' output can still come from the cache (None
    # for a frozen tower). Not by default at split 0 (LoRA in every layer): that caches only the convolutions.
    split = frozen_layers_below(model.audio_tower)
    cacheable = (not tower_trains or bool(split)) and not aug.changes_waveform
    use_cache = config.training.feature_cache if config.training.feature_cache is not None else cacheable
    if use_cache:
        if tower_trains and split is None:
            raise ValueError(
                "training.feature_cache needs a frozen audio tower, or a Whisper tower whose LoRA sits in its top "
                "layers only (model.encoder_lora_layers); this stage trains more of the encoder"
            )
        if aug.changes_waveform:
            raise ValueError("training.feature_cache cannot be used with speed or noise augmentation")
        cache = FeatureCache(model, upto=split)
        model.audio_frames_layer = split
        # Shortest first: clips of similar length share a batch, and the encoder pads a batch to its longest clip.
        ordered = sorted(rows + dev_rows, key=lambda r: r.get("duration") or 0.0)
        paths = list(dict.fromkeys(r["audio"] for r in ordered))
        with args.main_process_first(desc="encoder features"):  # other ranks then find everything cached
            computed, unreadable = cache.fill(paths, config.training.per_device_eval_batch_size)
        reused = len(paths) - computed - unreadable
        note = f", {unreadable} unreadable" if unreadable else ""
        print(f"features: {computed} computed, {reused} reused from {cache.folder}{note}")
    augmenter = WaveformAugmenter(aug, model.config.sample_rate, config.training.seed) if aug.changes_waveform else None
    if streamed:
        train_set = StreamingSpeechDataset(
            streamed[0], d.audio_column, streamed[1], model.config.sample_rate, augmenter
        )
    else:
        train_set = SpeechDataset(rows, model.config.sample_rate, cache, augment=aug, waveform_augmenter=augmenter)
    dev_set = SpeechDataset(dev_rows, model.config.sample_rate, cache) if dev_rows else None
    collator = SpeechCollator(model.processor, seed=config.training.seed)
    trainer = ASRTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=dev_set,
        data_collator=collator,
        callbacks=[SaveConfigCallback(config), *(callbacks or [])],
    )
    checkpoint = None
    if resume:
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint-* folder in {output_dir}")
        print(f"resuming from {last}")
        checkpoint = str(last)
    trainer.wer_rows = dev_rows[: config.training.eval_wer_samples]
    trainer.train(resume_from_checkpoint=checkpoint)
    if collator.skipped:
        print(f"data: skipped {collator.skipped} unreadable clips during training")
    if dev_set is not None:
        # Reuse the evaluation of the last step when there was one; evaluate only if training ended between two.
        last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
        if last is None or last["step"] != trainer.state.global_step:
            last = trainer.evaluate()
        print(f"dev: loss {last['eval_loss']:.4f} (perplexity {math.exp(min(last['eval_loss'], 50)):.1f})")
    final = output_dir / "final"
    if trainer.is_world_process_zero():  # only rank 0 writes the final model, so only it needs the mean
        if config.training.average_with:
            average_trained_weights(model, config.training.average_with)
            print(f"final: the mean of this run's weights and {', '.join(config.training.average_with)}")
        model.save_pretrained(final)
        (final / CONFIG_NAME).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        plot_curves(trainer.state.log_history, output_dir / "curves.png")
    # Under torchrun every rank leaves together and takes its process group down: a gloo group left for the
    # interpreter's exit can abort a rank ("terminate called without an active exception") after a good run.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if trainer.accelerator.num_processes > 1:
        # gloo's worker thread frees the last barrier's work after it completes, and needs the GIL for that. Were
        # the DDP reducer (which holds the group) freed first, the group's destructor would join that thread while
        # holding the GIL: a rank hung at exit after a good run (a CI run, py-spy: ~ProcessGroupGloo joining a
        # thread in ~AsyncBarrierWork, waiting for the GIL). A moment without the GIL lets the thread finish first.
        time.sleep(0.2)
    return final


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training and dev loss (and dev WER) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(h["step"], h[key]) for h in history if key in h]
        return [p[0] for p in points], [p[1] for p in points]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("loss", "training loss"), ("eval_loss", "dev loss")):
        steps, values = series(key)
        if steps:
            ax.plot(steps, values, marker="o" if key == "eval_loss" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    steps, wer = series("eval_wer")
    if steps:
        right = ax.twinx()
        right.plot(steps, [100 * w for w in wer], color="tab:red", marker="s", label="dev WER")
        right.set_ylabel("dev WER (%)")
        right.legend(loc="upper left")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
