"""Training on tiny backbones: config checks, stages, init_from, the dev loss going down, exact resume."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tiny_audio.testing import tone
from tiny_audio.train import build_model, load_train_config, set_stage, train

TEXTS = ["hello world", "one two three", "yes", "stop go left right", "the quick brown fox", "up down"]


@pytest.fixture
def manifest(tmp_path):
    """Six synthetic clips with transcripts, one broken row of each kind."""
    folder = tmp_path / "data"
    (folder / "audio").mkdir(parents=True)
    lines = []
    for i, text in enumerate(TEXTS):
        sf.write(folder / "audio" / f"{i}.wav", tone(0.5 + 0.2 * i, 200 + 60 * i, seed=i), 16000)
        lines.append({"id": str(i), "audio": f"audio/{i}.wav", "text": text, "duration": 0.5 + 0.2 * i})
    lines.append({"id": "gone", "audio": "audio/missing.wav", "text": "x", "duration": 1.0})
    lines.append({"id": "mute", "audio": "audio/0.wav", "text": "", "duration": 0.5})
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    return folder / "manifest.jsonl"


def config_for(backbones, manifest, tmp_path, *overrides):
    audio_dir, text_dir = backbones("whisper", "qwen3")
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(
        f"""
model: {{audio_model_id: {audio_dir}, text_model_id: {text_dir}, projector_hidden_dim: 64,
        encoder_lora_rank: 2, decoder_lora_rank: 2}}
data: {{train: [{manifest}], dev: {manifest}, min_duration_s: 0.1}}
training: {{learning_rate: 3.0e-3, max_steps: 8, per_device_train_batch_size: 2, save_steps: 4,
           eval_steps: 4, logging_steps: 1, report_to: [none], lr_scheduler_type: constant}}
"""
    )
    return load_train_config(str(yaml_path), list(overrides))


def test_config_errors_name_the_bad_key(backbones, manifest, tmp_path):
    with pytest.raises(KeyError, match="unknown training setting"):
        config_for(backbones, manifest, tmp_path, "training.learnin_rate=1")
    with pytest.raises(KeyError, match="no section 'optim'"):
        config_for(backbones, manifest, tmp_path, "optim.lr=1")
    with pytest.raises(ValueError, match="training.stage must be one of"):
        config_for(backbones, manifest, tmp_path, "training.stage=everything")
    assert config_for(backbones, manifest, tmp_path, "training.learning_rate=1e-4").training.learning_rate == 1e-4


def test_a_preset_extends_another_and_replaces_only_the_keys_it_lists(tmp_path):
    from tiny_audio.presets import load_preset

    child = tmp_path / "child.yaml"
    child.write_text("extends: default\ndata:\n  train: [a.jsonl]\ntraining:\n  learning_rate: 5.0e-4\n")
    base, merged = load_preset("default"), load_preset(child, ["training.num_train_epochs=2"])
    assert merged["model"] == base["model"] and merged["augment"] == base["augment"]
    assert merged["data"] == {**base["data"], "train": ["a.jsonl"]}  # lists replace, not append
    assert merged["training"] == {**base["training"], "learning_rate": 5.0e-4, "num_train_epochs": 2}
    assert "extends" not in merged and load_preset("default") == base  # the base preset is left as it was
    # The shipped stage 2 is stage 1's model: its init_from checkpoint must fit.
    assert load_preset("default-stage2")["model"] == base["model"]


@pytest.mark.parametrize(
    ("stage", "trains"),
    [
        ("projector", {"projector"}),
        ("decoder", {"projector", "language_model"}),
        ("all", {"projector", "language_model", "audio_tower"}),
    ],
)
def test_stages_choose_what_trains(backbones, manifest, tmp_path, stage, trains):
    model = build_model(config_for(backbones, manifest, tmp_path, f"training.stage={stage}"))
    training = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert training == trains
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("projector"))


def test_training_lowers_dev_loss_saves_trained_weights_and_config(backbones, manifest, tmp_path, capsys):
    config = config_for(backbones, manifest, tmp_path)
    final = train(config, output_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "kept 6, dropped 1 empty transcripts, 1 missing audio files, 1 unparsable lines" in out
    history = json.loads((tmp_path / "run" / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert evals[-1] < evals[0], evals
    assert any("eval_wer" in h for h in history), "normalized dev WER is logged at each evaluation"
    assert (tmp_path / "run" / "checkpoint-4" / "train_config.yaml").is_file()
    saved = load_file(str(final / "model.safetensors"))
    assert all(k.startswith("projector.") or "lora_" in k for k in saved)
    # A second stage starts from the first one's trained weights.
    stage2 = config_for(backbones, manifest, tmp_path, f"training.init_from={final}", "training.stage=decoder")
    model = build_model(stage2)
    torch.testing.assert_close(model.projector.down_proj.weight, saved["projector.down_proj.weight"])


def test_ctc_alignment_loss_is_added_in_training_logged_and_lowered(backbones, manifest, tmp_path):
    # bf16 autocast wraps the model's forward and rebuilds its outputs: the logged CTC loss must survive that.
    config = config_for(backbones, manifest, tmp_path, "training.ctc_weight=0.5", "data.dev=null", "training.bf16=true")
    model = build_model(config)
    batch = model.processor(audio=[tone(1.0), tone(1.2, 300)], text=["hello world", "yes"])
    model.train()
    loss, ctc = model(**batch).loss, model.last_ctc_loss
    assert ctc > 0
    model.ctc_weight = 0.0
    torch.testing.assert_close(float(loss), float(model(**batch).loss) + 0.5 * ctc)
    model.ctc_weight, model.last_ctc_loss = 0.5, None
    model.eval()
    model(**batch)
    assert model.last_ctc_loss is None, "evaluation scores the LM loss alone"

    train(config, output_dir=tmp_path / "run")
    history = json.loads((tmp_path / "run" / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    ctc = [h["ctc_loss"] for h in history if "ctc_loss" in h]
    assert len(ctc) == 8 and ctc[-1] < ctc[0], ctc


def test_a_ctc_blank_outside_the_vocabulary_is_refused(backbones, manifest, tmp_path):
    config = config_for(backbones, manifest, tmp_path, "training.ctc_weight=0.5", "training.ctc_blank_token=<nope>")
    with pytest.raises(ValueError, match="ctc_blank_token"):
        build_model(config)


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
            control.should_save = True


def test_resume_continues_exactly_where_the_run_stopped(backbones, manifest, tmp_path):
    straight = train(config_for(backbones, manifest, tmp_path, "data.dev=null"), output_dir=tmp_path / "a")
    stopped = tmp_path / "b"
    train(config_for(backbones, manifest, tmp_path, "data.dev=null"), output_dir=stopped, callbacks=[StopAt(3)])
    assert (stopped / "checkpoint-3").is_dir()
    resumed = train(config_for(backbones, manifest, tmp_path, "data.dev=null"), output_dir=stopped, resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_average_with_ends_on_the_mean_of_this_run_and_the_given_weights(backbones, manifest, tmp_path):
    first = train(config_for(backbones, manifest, tmp_path, "data.dev=null"), output_dir=tmp_path / "a")
    soup = config_for(
        backbones, manifest, tmp_path, "data.dev=null", "training.seed=7", f"training.average_with=[{first}]"
    )
    final = train(soup, output_dir=tmp_path / "b")
    own = load_file(str(tmp_path / "b" / "checkpoint-8" / "model.safetensors"))  # checkpoints stay the run's own
    other, mean = load_file(str(first / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert mean.keys() == own.keys()
    assert not torch.equal(own["projector.down_proj.weight"], other["projector.down_proj.weight"])
    for key in mean:
        torch.testing.assert_close(mean[key], (own[key] + other[key]) / 2)
    assert "average_with" in (final / "train_config.yaml").read_text()


def test_average_with_a_stage_that_lacked_new_lora_modules_halves_their_update(backbones, manifest, tmp_path):
    first = train(config_for(backbones, manifest, tmp_path, "data.dev=null"), output_dir=tmp_path / "a")
    wider = config_for(
        backbones,
        manifest,
        tmp_path,
        "data.dev=null",
        "model.decoder_lora_target_modules=[q_proj,v_proj,o_proj]",
        f"training.init_from={first}",
        f"training.average_with=[{first}]",
    )
    final = train(wider, output_dir=tmp_path / "b")
    own = load_file(str(tmp_path / "b" / "checkpoint-8" / "model.safetensors"))
    other, mean = load_file(str(first / "model.safetensors")), load_file(str(final / "model.safetensors"))
    new = sorted(key for key in own if "o_proj.lora_A" in key)
    assert new and not any(key in other for key in new)
    for a_key in new:
        b_key = a_key.replace("lora_A", "lora_B")
        assert own[b_key].abs().sum() > 0  # the run trained them
        # the earlier stage's update on these modules is zero, so the soup's update is half this run's
        torch.testing.assert_close(mean[b_key] @ mean[a_key], own[b_key] @ own[a_key] / 2)
    for key in other:
        torch.testing.assert_close(mean[key], (own[key] + other[key]) / 2)


def test_average_with_a_missing_folder_fails_before_training(backbones, manifest, tmp_path):
    config = config_for(backbones, manifest, tmp_path, f"training.average_with=[{tmp_path / 'nowhere'}]")
    with pytest.raises(FileNotFoundError, match="average_with"):
        train(config, output_dir=tmp_path / "run")
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_unwritable_output_folder_fails_before_training(backbones, manifest, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to the output folder"):
        train(config_for(backbones, manifest, tmp_path), output_dir=blocker / "run")


def test_output_folder_check_is_safe_when_every_rank_runs_it_at_once(tmp_path):
    # Under torchrun each rank checks the same folder at the same moment; a shared probe file
    # let one rank delete it under another (a CI failure of the two-process test).
    import threading

    from tiny_audio.train import check_output_dir

    errors = []

    def rank():
        for _ in range(200):
            try:
                check_output_dir(tmp_path / "run")
            except OSError as err:
                errors.append(err)

    threads = [threading.Thread(target=rank) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list((tmp_path / "run").iterdir()) == []  # no probe left behind


def test_set_stage_projector_only_freezes_lora(make_model):
    model = make_model()
    set_stage(model, "projector")
    assert model.parameter_report()["total"]["trainable"] == model.parameter_report()["projector"]["total"]


def test_frozen_encoder_stages_train_from_the_feature_cache(backbones, manifest, tmp_path, capsys):
    config = config_for(backbones, manifest, tmp_path, "training.stage=decoder", "training.max_steps=4")
    train(config, output_dir=tmp_path / "first")
    assert "features: 6 computed, 0 reused" in capsys.readouterr().out
    config = config_for(backbones, manifest, tmp_path, "training.stage=decoder", "training.max_steps=4")
    train(config, output_dir=tmp_path / "second")
    assert "features: 0 computed, 6 reused" in capsys.readouterr().out
    hubert = backbones("hubert", "qwen3")[0]  # its encoder cannot run in two parts, so LoRA there rules it out
    config = config_for(backbones, manifest, tmp_path, f"model.audio_model_id={hubert}", "training.feature_cache=true")
    with pytest.raises(ValueError, match="needs a frozen audio tower, or a Whisper tower whose LoRA sits in its top"):
        train(config, output_dir=tmp_path / "x")


def test_training_only_the_top_whisper_layers_reads_the_layers_below_from_the_feature_cache(
    backbones, manifest, tmp_path, capsys
):
    top = ("model.encoder_lora_layers=[1]", "training.stage=encoder", "training.max_steps=4")
    train(config_for(backbones, manifest, tmp_path, *top), output_dir=tmp_path / "run")
    assert "features: 6 computed, 0 reused" in capsys.readouterr().out
    weights = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    encoder_b = {k: v for k, v in weights.items() if k.startswith("audio_tower.") and "lora_B" in k}
    assert encoder_b and all(".layers.1." in k for k in encoder_b)  # adapters only in the top layer
    assert any(v.abs().sum() > 0 for v in encoder_b.values())  # and they trained (B starts at zero)
    train(config_for(backbones, manifest, tmp_path, *top, "training.max_steps=2"), output_dir=tmp_path / "again")
    assert "features: 0 computed, 6 reused" in capsys.readouterr().out  # training the top layer kept the entries
    with pytest.raises(ValueError, match="encoder_lora_layers"):
        train(config_for(backbones, manifest, tmp_path, "model.encoder_lora_layers=[2]"), output_dir=tmp_path / "x")


def test_a_run_killed_with_sigkill_resumes_from_its_last_complete_checkpoint(backbones, manifest, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tiny_audio import ASRModel
    from tiny_audio.train import last_complete_checkpoint

    config_for(backbones, manifest, tmp_path)  # writes run.yaml
    args = ["training.max_steps=400", "training.save_steps=2", "training.eval_steps=1000", "data.dev=null"]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tiny_audio", "train", str(tmp_path / "run.yaml"), *args, "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 180
    while time.time() < deadline and last_complete_checkpoint(out) is None:
        time.sleep(0.1)
    time.sleep(0.7)  # somewhere in the following steps or saves
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = last_complete_checkpoint(out)
    assert last is not None
    ASRModel.from_pretrained(last)  # the last complete checkpoint loads as a model
    step = int(last.name.split("-")[1])
    resume = cmd[:5] + [f"training.max_steps={step + 2}", *args[1:], "--output-dir", str(out), "--resume"]
    done = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {last}" in done.stdout
    assert (out / "final" / "model.safetensors").is_file()


DRIVER = """
import hashlib, os, sys
from pathlib import Path
import torch.distributed as dist
from transformers import TrainerCallback
from tiny_audio.train import load_train_config, train

class HashWeights(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for key, value in sorted(model.trained_state_dict().items()):
            digest.update(key.encode()); digest.update(value.detach().float().numpy().tobytes())
        Path(args.output_dir, f"rank{dist.get_rank()}.sha256").write_text(digest.hexdigest())

def refuse(*args, **kwargs):
    raise RuntimeError("rank 1 tried to write")

if os.environ["RANK"] == "1":  # only rank 0 may write checkpoints, the final model or cached features
    from tiny_audio.features import FeatureCache
    from tiny_audio.model import ASRModel
    ASRModel.save_pretrained = refuse
    FeatureCache._write = refuse

config = load_train_config(sys.argv[1], sys.argv[3:])
train(config, output_dir=sys.argv[2], callbacks=[HashWeights()])
"""


def test_two_processes_keep_identical_weights_and_only_rank0_saves(backbones, manifest, tmp_path):
    import subprocess
    import sys

    from tiny_audio.testing import free_port

    config_for(backbones, manifest, tmp_path)  # writes run.yaml
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    port = free_port()
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "--master_addr=127.0.0.1",
        str(driver),
        str(tmp_path / "run.yaml"),
        str(out),
        "training.max_steps=4",
        "training.save_steps=2",
        "training.stage=decoder",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Really one data-parallel job: 6 clips, 2 per process x 2 processes -> 2 steps per epoch (alone: 3).
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["epoch"] == 2.0, state["epoch"]
    hashes = {(out / f"rank{r}.sha256").read_text() for r in (0, 1)}
    assert len(hashes) == 1, "both ranks hold the same trained weights"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (out / "final" / "model.safetensors").is_file()


def test_mixing_weights_plot_and_tensorboard(backbones, manifest, tmp_path, capsys):
    config = config_for(
        backbones,
        manifest,
        tmp_path,
        f"data.train=[{manifest},{manifest}]",
        "data.train_weights=[2,0.5]",
        "training.max_steps=2",
        "training.report_to=[tensorboard]",
    )
    train(config, output_dir=tmp_path / "mix")
    # 6 rows x 2 + 3 of the second copy = 15 rows; 15 / batch 2 -> 8 steps per epoch.
    state = json.loads((tmp_path / "mix" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["max_steps"] == 2 and abs(state["epoch"] - 2 / 8) < 1e-6, state["epoch"]
    assert (tmp_path / "mix" / "curves.png").stat().st_size > 1000
    assert list((tmp_path / "mix").rglob("events.out.tfevents.*")), "TensorBoard event files are written"
    with pytest.raises(ValueError, match="one non-negative weight per source"):
        train(config_for(backbones, manifest, tmp_path, "data.train_weights=[1,1]"), output_dir=tmp_path / "bad")


def test_augmented_training_keeps_the_cache_for_masks_and_drops_it_for_waveform_changes(
    backbones, manifest, tmp_path, capsys
):
    masks = ["training.stage=decoder", "training.max_steps=2", "augment.time_masks=2", "augment.silence_share=0.5"]
    train(config_for(backbones, manifest, tmp_path, *masks), output_dir=tmp_path / "masked")
    out = capsys.readouterr().out
    assert "added 3 silence/noise clips with empty targets" in out and "features: " in out
    wave = [
        "training.stage=decoder",
        "training.max_steps=2",
        "augment.speed_range=[0.9,1.1]",
        "augment.noise_snr_db=[5,20]",
    ]
    train(config_for(backbones, manifest, tmp_path, *wave), output_dir=tmp_path / "wave")
    assert "features: " not in capsys.readouterr().out
    with pytest.raises(ValueError, match="cannot be used with speed or noise"):
        train(
            config_for(backbones, manifest, tmp_path, *wave, "training.feature_cache=true"), output_dir=tmp_path / "x"
        )


def _hf_dataset(tmp_path):
    import io

    import datasets

    def clip(i):
        buf = io.BytesIO()
        sf.write(buf, tone(0.6 + 0.2 * i, 200 + 60 * i, seed=i), 16000, format="FLAC")
        return {"bytes": buf.getvalue(), "path": f"{i}.flac"}

    table = {"audio": [clip(i) for i in range(len(TEXTS))], "sentence": TEXTS}
    ds = datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(2))}).save_to_disk(tmp_path / "hfds")
    (tmp_path / "hub" / "data").mkdir(parents=True)
    ds.to_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    return tmp_path / "hfds", tmp_path / "hub"


def test_hugging_face_datasets_saved_and_streamed(backbones, manifest, tmp_path, capsys):
    saved, hub_like = _hf_dataset(tmp_path)
    args = [f"data.train=[{saved}]", f"data.dev={saved}", "training.stage=decoder", "training.max_steps=2"]
    train(config_for(backbones, manifest, tmp_path, *args), output_dir=tmp_path / "saved")
    out = capsys.readouterr().out
    assert f"{saved} [train]: kept 6" in out and f"{saved} [validation]: kept 2" in out
    # 6 train + 2 validation rows (the validation split is its own dataset, with its own cache keys)
    assert "features: 8 computed" in out, "Hugging Face rows go through the feature cache too"
    streamed = [f"data.train=[hf:{hub_like}]", "data.streaming=true", "data.dev=null", "training.max_steps=3"]
    final = train(config_for(backbones, manifest, tmp_path, *streamed), output_dir=tmp_path / "streamed")
    assert (final / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="data.streaming needs exactly one hf:NAME source"):
        train(config_for(backbones, manifest, tmp_path, "data.streaming=true"), output_dir=tmp_path / "bad")


def test_logging_backends_auto_never_needs_an_account(monkeypatch):
    from tiny_audio.train import logging_backends

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert logging_backends(["auto"])[0] == "tensorboard" and "wandb" not in logging_backends(["auto"])
    assert logging_backends(["none"]) == [] and logging_backends(["tensorboard", "wandb"]) == ["tensorboard", "wandb"]


def test_sentence_case_rewrites_only_all_caps_transcripts():
    from tiny_audio.train import sentence_case

    assert sentence_case("HER MOTHER WAS A WOMAN I'M SURE I SAW") == "Her mother was a woman I'm sure I saw"
    assert sentence_case("X I SIXTY ONE") == "X I sixty one"
    assert sentence_case("Printing, in the only sense") == "Printing, in the only sense"
    assert sentence_case("123") == "123"
