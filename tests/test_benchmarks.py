"""The benchmark scripts stay runnable: the GPU one in its CPU smoke mode (tiny configs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "infer", "train-seed", "--tiny", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["default-design batched inference", "seed-size training step"]
    assert rows[0]["rtfx"] > 0 and rows[1]["samples_per_s"] > 0


def test_decode_step_benchmark_times_every_weight_format(tmp_path):
    out = tmp_path / "decode.json"
    script = ROOT / "benchmarks" / "decode_step.py"
    command = [sys.executable, str(script), "--layers", "1", "--steps", "1", "--output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["format"] for r in rows] == ["float32", "bfloat16", "int8-dynamic", "int8-weight-only"]
    # bfloat16 stores half of float32's bytes, int8 a quarter (plus the scales).
    assert rows[1]["weights_mb"] == rows[0]["weights_mb"] / 2
    assert all(r["ms_per_step"] > 0 for r in rows) and rows[3]["weights_mb"] < rows[1]["weights_mb"]


def dev_data(folder: Path, texts: list[str]) -> None:
    """A shared-data folder whose dev part has one short tone clip per text, from sources "a" and "b" in turn."""
    import soundfile as sf

    from tiny_audio.testing import tone

    (folder / "dev").mkdir(parents=True)
    with open(folder / "dev" / "manifest.jsonl", "w") as manifest:
        for i, text in enumerate(texts):
            sf.write(folder / "dev" / f"{i}.wav", tone(0.5 + 0.2 * i, seed=i), 16000)
            row = {"id": i, "audio": f"{i}.wav", "text": text, "duration": 0.5 + 0.2 * i, "source": "ab"[i % 2]}
            manifest.write(json.dumps(row) + "\n")


def test_ilm_weight_benchmark_scores_each_weight_as_its_own_run(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    dev_data(tmp_path / "data", ["the cat sat", "hello world", "yes"])
    out = tmp_path / "ilm.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "ilm_weight.py"), "--model", str(tmp_path / "m"),
               "--data", str(tmp_path / "data"), "--weight", "0", "--weight", "2", "--num-beams", "2",
               "--output-dir", str(tmp_path / "runs"), "--output", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["clips"] == 3 and report["num_beams"] == 2 and list(report["weights"]) == ["0", "2"]
    assert all(set(w["by_source"]) == {"a", "b"} and w["rtfx"] > 0 for w in report["weights"].values())
    logs = sorted((tmp_path / "runs").rglob("utterances.jsonl"))
    assert [p.parent.name for p in logs] == ["ilm-0-beams2", "ilm-2-beams2"]
    assert all(len(p.read_text().splitlines()) == 3 for p in logs)


def test_ctc_weight_sweep_runs_each_setting_and_refuses_a_model_without_a_head(make_model, tmp_path):
    make_model(ctc_head_dim=8).save_pretrained(tmp_path / "m")
    make_model().save_pretrained(tmp_path / "plain")
    dev_data(tmp_path / "data", ["the cat sat", "hello world", "yes", "no"])
    out = tmp_path / "ctc.json"

    def sweep(model, *args):
        command = [sys.executable, str(ROOT / "benchmarks" / "ctc_weight.py"), "--model", str(tmp_path / model),
                   "--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "runs"), "--output", str(out),
                   "--every", "2", *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    done = sweep("m", "--weight", "0.5", "--num-beams", "1", "--num-beams", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["clips"] == 2 and list(report["runs"]) == ["ctc-0.5-beams1", "ctc-0.5-beams2"]
    assert all(r["rtfx"] > 0 for r in report["runs"].values())
    softer = sweep("m", "--weight", "0.5", "--num-beams", "1", "--head-temperature", "2", "--head-loss")
    assert softer.returncode == 0, softer.stderr[-2000:]
    report = json.loads(out.read_text())  # the earlier runs are kept beside the new one
    assert list(report["runs"]) == ["ctc-0.5-beams1", "ctc-0.5-beams2", "ctc-0.5-beams1-t2"]
    assert list(report["head_loss"]) == ["2"] and report["head_loss"]["2"] > 0
    for refused in sweep("plain", "--weight", "0.5"), sweep("plain", "--head-loss"):
        assert refused.returncode != 0 and "no CTC head" in refused.stderr and "Traceback" not in refused.stderr


def test_soften_divides_the_head_logits_by_the_temperature(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from ctc_weight import soften

    from tiny_audio.ctc import CTCHead

    torch.manual_seed(0)
    head = CTCHead(16, 8).eval()
    frames = torch.randn(2, 10, 16)
    with torch.no_grad():
        plain = head(frames)
        soften(head, 2.0)
        softer = head(frames)
    assert torch.allclose(softer, (plain / 2).log_softmax(-1), atol=1e-6)
    assert torch.allclose(softer.exp().sum(-1), torch.ones(2, 5), atol=1e-5)
    assert softer.exp().max() < plain.exp().max()  # flatter


def test_lm_rescore_keeps_every_beam_hypothesis_and_sweeps_weights_on_halves(make_model, backbones, tmp_path):
    from tiny_audio.ctc import CTCHead

    model = make_model()
    model.config.ctc_head_dim = 16
    model.ctc_head = CTCHead(model.config.audio_config.hidden_size, 16)
    model.config.generation_defaults["ctc_head_weight"] = 0.2
    model.config.generation_defaults["ctc_word_gaps"] = False  # as the default decodes (and speed_views reads)
    model.save_pretrained(tmp_path / "m")
    dev_data(tmp_path / "data", ["the cat sat", "hello world", "yes", "no"])
    nbest, out = tmp_path / "nbest.jsonl", tmp_path / "rescore.json"
    script = str(ROOT / "benchmarks" / "lm_rescore.py")
    command = [sys.executable, script, "nbest", "--model", str(tmp_path / "m"), "--num-beams", "2",
               "--data", str(tmp_path / "data"), "--output", str(nbest), "--limit", "3"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(command[:-2], capture_output=True, text=True, timeout=600)  # resumes: the 4th clip only
    assert again.returncode == 0, again.stderr[-2000:]
    clips = [json.loads(line) for line in nbest.read_text().splitlines()]
    assert len(clips) == 4 and len({c["id"] for c in clips}) == 4 and {c["ctc_weight"] for c in clips} == {0.2}
    assert all(len(c["hyps"]) == 2 and all(h["sum"] < 0 and h["ctc"] <= 0 for h in c["hyps"]) for c in clips)
    _, lm = backbones()
    command = [sys.executable, script, "rescore", str(nbest), "--lm", lm, "--weight", "0", "1",
               "--ctc-weight", "0.5", "--bonus", "0", "--output", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["clips"] == 4 and set(report["beam_top"]) == {"all", "even", "odd"}
    assert report["oracle"] <= report["beam_top"]["all"]
    sweep = {(r["weight"], r["ctc_weight"]): r for r in report["sweep_without_bonus"]}
    assert set(sweep) == {(0, 0.2), (0, 0.5), (1, 0.2), (1, 0.5)}  # the search's CTC weight is always swept
    assert all(report["oracle"] <= r["all"] for r in sweep.values())
    assert len(report["best_on_even"]) == 4  # 2 weights x 2 CTC weights x 1 bonus
    # Minimum Bayes risk at the best weights: at temperature 0 it is their top pick; no pick beats the oracle.
    mbr = {r["temperature"]: r for r in report["mbr_at_best"]}
    best = report["best_on_even"][0]
    assert {k: mbr[0][k] for k in ("all", "even", "odd")} == {k: best[k] for k in ("all", "even", "odd")}
    assert all(report["oracle"] <= r["all"] for r in mbr.values())
    # Each corpus's share: its words add up to all of them, and its WERs weighted by them give the overall ones.
    parts = report["by_source"]
    assert set(parts) == {"a", "b"} and all(p["oracle"] <= p["best_on_even"] for p in parts.values())
    total = sum(p["words"] for p in parts.values())
    assert total == sum(len(t.split()) for t in ["the cat sat", "hello world", "yes", "no"])
    assert abs(sum(p["words"] * p["best_on_even"] for p in parts.values()) / total - best["all"]) < 0.02

    # The speed views: each hypothesis scored by the model's LLM and head at speeds 1.0, 0.9 and 1.1.
    views_script = str(ROOT / "benchmarks" / "speed_views.py")
    command = [sys.executable, views_script, str(nbest), "--model", str(tmp_path / "m"), "--lm", lm,
               "--data", str(tmp_path / "data"), "--output", str(tmp_path / "views.json")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    views = [json.loads(line) for line in nbest.with_suffix(".views.jsonl").read_text().splitlines()]
    assert [v["id"] for v in views] == [c["id"] for c in clips]
    for v, c in zip(views, clips, strict=True):
        assert all(len(v[f"{kind}{s}"]) == 2 for kind in ("llm", "ctc") for s in (1.0, 0.9, 1.1))
        assert all(x <= 0 for s in (1.0, 0.9, 1.1) for x in v[f"llm{s}"])
        assert v["llm1.0"] != v["llm0.9"] and v["ctc1.0"] != v["ctc1.1"]  # another speed, another view
        if c["hyps"][0]["text"] == c["hyps"][1]["text"]:  # a text's score depends on the text, not its tokens
            assert v["llm1.0"][0] == v["llm1.0"][1] and v["ctc0.9"][0] == v["ctc0.9"][1]
    views_report = json.loads((tmp_path / "views.json").read_text())
    assert views_report["clips"] == 4 and views_report["oracle"] <= views_report["shipped_rescoring"]["all"]
    assert len(views_report["sweep"]) == 6 * 5 * 2
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)  # all scored: the report only
    # No progress line ("1/4, 3 s"); the report's paths may hold "1/" (pytest-131/), hence the line match.
    assert rerun.returncode == 0 and not re.search(r"^\d+/\d+, ", rerun.stdout, re.MULTILINE)


def test_whisper_padding_probe_trains_a_head_on_each_kind_of_frame(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    dev_data(tmp_path / "data", ["the cat sat", "hello world"])
    (tmp_path / "data" / "train").symlink_to(tmp_path / "data" / "dev")
    out = tmp_path / "padding.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "whisper_padding.py"), "--model", str(tmp_path / "m"),
               "--data", str(tmp_path / "data"), "--epochs", "1", "--output", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    histories = json.loads(out.read_text())["histories"]
    assert set(histories) == {"real length", "padded to 30 s"}
    real, padded = histories["real length"][0]["dev_loss"], histories["padded to 30 s"][0]["dev_loss"]
    assert 0 < real < float("inf") and 0 < padded < float("inf") and real != padded  # other frames, other heads
