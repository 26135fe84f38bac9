"""Evaluation runs: resumable per-utterance logs, scores an independent scorer agrees with, peers side by side."""

from __future__ import annotations

import json
import subprocess
import sys

import jiwer
import pytest
import soundfile as sf
from whisper_normalizer.english import EnglishTextNormalizer

from tiny_audio.evaluate import run_evaluation, summarize
from tiny_audio.testing import tone


class Echo:
    """A fake recognizer that returns fixed texts and counts its calls."""

    name = "echo"

    def __init__(self, answers):
        self.answers, self.calls = answers, 0

    def transcribe(self, arrays):
        self.calls += len(arrays)
        return [self.answers[self.calls - len(arrays) + i] for i in range(len(arrays))]

    def describe(self):
        return {"system": "echo"}


def rows_for(tmp_path):
    rows = []
    for i, text in enumerate(["the cat sat", "on the mat", "hello world", "one two three", "yes"]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone(0.5 + 0.1 * i, seed=i), 16000)
        rows.append({"id": i, "audio": str(path), "text": text, "duration": 0.5 + 0.1 * i, "source": "ab"[i % 2]})
    return rows


def test_scores_breakdown_and_resume_after_a_kill(tmp_path):
    rows = rows_for(tmp_path)
    answers = ["the cat sat", "on a mat", "hello world", "one two", "yes yes"]
    first = run_evaluation(Echo(answers), rows, tmp_path / "run", batch_size=2, progress=False)
    # Normalized, "one two three" is "123" and "one two" is "12": one substitution, not a deletion.
    assert (first["substitutions"], first["deletions"], first["insertions"], first["words"]) == (2, 0, 1, 10)
    assert set(first["by_source"]) == {"a", "b"} and first["rtfx"] > 0 and first["batch_size"] == 2
    # Kill mid-write: the log ends with half a line and no results.json; the rerun redoes only what is missing.
    log = tmp_path / "run" / "utterances.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    (tmp_path / "run" / "results.json").unlink()
    again = Echo(answers[3:])
    resumed = run_evaluation(again, rows, tmp_path / "run", batch_size=2, progress=False)
    assert again.calls == 2
    assert {k: resumed[k] for k in ("wer", "substitutions", "deletions", "insertions")} == {
        k: first[k] for k in ("wer", "substitutions", "deletions", "insertions")
    }


def test_unreadable_clips_are_recorded_not_fatal(tmp_path):
    rows = rows_for(tmp_path)[:2]
    (tmp_path / "0.wav").write_text("broken")
    result = run_evaluation(Echo(["on the mat"]), rows, tmp_path / "run", progress=False)
    assert result["failed"] == 1 and result["utterances"] == 1 and result["wer"] == 0


def test_eval_cli_peers_side_by_side_and_independent_scoring(shared_data, tmp_path):
    dev = [json.loads(line) for line in (shared_data / "dev" / "manifest.jsonl").read_text().splitlines()]
    # three clips of the first corpus and one of another, so the by-source table is printed
    rows = dev[:3] + [next(row for row in dev if row["source"] != dev[0]["source"])]
    for row in rows:
        row["audio"] = str(shared_data / "dev" / row["audio"])
    (tmp_path / "four.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = subprocess.run(
        [sys.executable, "-m", "tiny_audio", "eval", "--model", "faster-whisper:base", "--model", "pocketsphinx",
         "--data", str(tmp_path / "four.jsonl"), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    # each model's row names it whole, and the by-source table has a column for each
    assert any(line.startswith("[1]") and line.endswith("  faster-whisper:base:int8") for line in lines)
    assert any(line.startswith("[2]") and line.rstrip().endswith("  pocketsphinx") for line in lines)
    header = next(line for line in lines if line.startswith("WER % by source"))
    assert header.split()[-2:] == ["[1]", "[2]"]
    folder = next(tmp_path.glob("*/faster-whisper-base"))
    records = [json.loads(x) for x in (folder / "utterances.jsonl").read_text().splitlines()]
    ours = json.loads((folder / "results.json").read_text())
    normalizer = EnglishTextNormalizer()
    independent = jiwer.wer(
        [normalizer(r["reference"]) for r in records], [normalizer(r["hypothesis"]) for r in records]
    )
    assert abs(ours["wer"] - independent) < 1e-9
    assert summarize(records)["wer"] == ours["wer"]


def test_analysis_high_wer_and_compare(tmp_path):
    from tiny_audio.analysis import compare, high_wer

    rows = rows_for(tmp_path)
    run_evaluation(
        Echo(["the cat sat", "on a mat", "hello world", "one two", "yes"]), rows, tmp_path / "a", progress=False
    )
    run_evaluation(
        Echo(["the hat sat", "on the mat", "hello world", "one two three", "yes"]), rows, tmp_path / "b", progress=False
    )
    worst = high_wer(tmp_path / "a", threshold=30)
    assert [r["id"] for r in worst] == ["3", "1"] and worst[0]["wer"] == 100.0
    result = compare(tmp_path / "a", tmp_path / "b")
    assert (result["common"], len(result["won"]), len(result["lost"]), result["tied"]) == (5, 2, 1, 2)
    assert result["errors_a"]["substitutions"]["the -> a"] == 1
    assert result["errors_b"]["substitutions"]["cat -> hat"] == 1


def test_leaderboard_ranks_and_renders(tmp_path):
    from tiny_audio.leaderboard import build

    for model, wer, rtfx, data in [("a", 0.2, 50, "dev"), ("b", 0.1, 5, "dev"), ("b", 0.4, 6, "hf:x:y:test")]:
        folder = tmp_path / "runs" / f"{model}-{rtfx}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(
            json.dumps({"model": model, "wer": wer, "rtfx": rtfx, "data": data, "date": "2026-11-24T00:00:00Z"})
        )
    text = build([tmp_path / "runs"], tmp_path / "board")
    lines = text.splitlines()
    assert lines[0] == "| rank | model | WER % dev | WER % y/test | RTFx | parameters | date | code |"
    assert lines[2].startswith("| 1 | a | 20.00 | - |"), "a: mean WER 0.20 ranks first"
    assert lines[3].startswith("| 2 | b | 10.00 | 40.00 | 5.5 |"), "b: mean WER 0.25, mean RTFx 5.5"
    assert (tmp_path / "board" / "leaderboard.png").stat().st_size > 1000
    assert "<table>" in (tmp_path / "board" / "index.html").read_text()


def test_model_card_metadata_parses_as_the_hub_expects(make_model, tmp_path):
    from huggingface_hub import ModelCard

    from tiny_audio.hub import card_metadata, write_model_card

    make_model("whisper", "qwen3").save_pretrained(tmp_path / "m")
    result = tmp_path / "results.json"
    own = {"model": "m", "data": "dev/manifest.jsonl", "wer": 0.1234, "cer": 0.05, "rtfx": 12.5}
    result.write_text(json.dumps({**own, "system": "tiny-audio", "by_source": {"LibriSpeech": {"wer": 0.2}}}))
    # A peer from the same eval run: shown for comparison, never claimed as this model's score.
    peer = tmp_path / "peer.json"
    fw = {"model": "faster-whisper:base:int8", "data": "dev/manifest.jsonl", "wer": 0.0742, "rtfx": 12.3}
    peer.write_text(json.dumps({**fw, "system": "faster-whisper", "by_source": {"LibriSpeech": {"wer": 0.05}}}))
    path = write_model_card(
        tmp_path / "m", [result, peer], repo_id="someone/tiny-asr", datasets=["openslr/librispeech_asr"]
    )
    card = ModelCard.load(path)  # the Hub's own parser
    meta = card_metadata(path.read_text())
    assert meta["pipeline_tag"] == "automatic-speech-recognition" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["openslr/librispeech_asr"] and meta["language"] == ["en"]
    [evaluation] = card.data.eval_results
    assert (evaluation.metric_type, evaluation.metric_value, evaluation.task_type) == (
        "wer",
        12.34,
        "automatic-speech-recognition",
    )
    text = path.read_text()
    assert 'pipeline("automatic-speech-recognition", model="someone/tiny-asr", trust_remote_code=True)' in text
    assert "| projector |" in text and "12.34" in text and "## Limitations" in text
    assert "| faster-whisper:base:int8 | dev/manifest.jsonl | 7.42 |" in text
    assert "| LibriSpeech | 20.00 | 5.00 |" in text


SHARDED_EVAL = """
import json, sys
from pathlib import Path
from tiny_audio.evaluate import run_evaluation

class ByLength:
    # Deterministic per clip, whichever process gets it: the hypothesis depends on the clip's length only.
    name = "by-length"
    def transcribe(self, arrays):
        return [["the cat sat", "on a mat", "hello", "one two three four", "yes"][len(a) // 1600 - 5]
                for a in arrays]
    def describe(self):
        return {"system": "by-length"}

rows = json.loads(Path(sys.argv[1]).read_text())
limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
run_evaluation(ByLength(), rows[:limit] if limit else rows, Path(sys.argv[2]), batch_size=1, progress=False)
"""


def test_evaluation_spread_over_processes_equals_one_process(tmp_path):
    rows = rows_for(tmp_path)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    script = tmp_path / "sharded_eval.py"
    script.write_text(SHARDED_EVAL)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", str(script)]

    def run(*command):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    run(sys.executable, str(script), str(tmp_path / "rows.json"), str(tmp_path / "one"))
    # Two processes, and a run that stopped after three utterances resumed by two processes.
    run(*launch, str(tmp_path / "rows.json"), str(tmp_path / "two"))
    run(sys.executable, str(script), str(tmp_path / "rows.json"), str(tmp_path / "resumed"), "3")
    run(*launch, str(tmp_path / "rows.json"), str(tmp_path / "resumed"))

    def load(name):
        lines = (tmp_path / name / "utterances.jsonl").read_text().splitlines()
        return [(r["id"], r["hypothesis"]) for r in map(json.loads, lines)]

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one["wer"] > 0 and one["processes"] == 1
    for name in ("two", "resumed"):
        assert load(name) == load("one"), name
        assert not list((tmp_path / name).glob("utterances.rank*.jsonl")), "the per-process logs are merged"
        result = json.loads((tmp_path / name / "results.json").read_text())
        for key in ("wer", "cer", "substitutions", "deletions", "insertions", "utterances", "by_source"):
            assert result[key] == one[key], (name, key)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["processes"] == 2


def test_eval_command_under_accelerate_launch_reports_once(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    with open(tmp_path / "manifest.jsonl", "w") as manifest:
        for row in rows_for(tmp_path):
            manifest.write(json.dumps(row) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m",
         "tiny_audio", "eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "manifest.jsonl"),
         "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("evaluating 5") == 1, result.stdout
    [log] = (tmp_path / "out").rglob("utterances.jsonl")
    assert [json.loads(line)["id"] for line in log.read_text().splitlines()] == ["0", "1", "2", "3", "4"]
    assert json.loads((log.parent / "results.json").read_text())["processes"] == 2


def test_eval_model_spec_takes_a_cpu_precision(make_model, tmp_path):
    import torch

    from tiny_audio.peers import load_recognizer

    make_model().save_pretrained(tmp_path / "m")
    plain, half = load_recognizer(str(tmp_path / "m")), load_recognizer(f"{tmp_path / 'm'}:bfloat16")
    assert half.name == f"{tmp_path / 'm'}:bfloat16" and plain.name == str(tmp_path / "m")
    assert next(half.model.language_model.parameters()).dtype == torch.bfloat16
    assert len(half.transcribe([tone(1.0)])) == 1
    beams = load_recognizer(str(tmp_path / "m"), num_beams=3)
    assert beams.name == f"{tmp_path / 'm'} (beams 3)"
    assert beams.describe()["num_beams"] == 3 and plain.describe()["num_beams"] == 1
    assert len(beams.transcribe([tone(1.0), tone(0.5)])) == 2


def test_eval_beam_width_is_its_own_result(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    with open(tmp_path / "manifest.jsonl", "w") as manifest:
        for row in rows_for(tmp_path)[:2]:
            manifest.write(json.dumps(row) + "\n")
    base = [sys.executable, "-m", "tiny_audio", "eval", "--model", str(tmp_path / "m"), "--data",
            str(tmp_path / "manifest.jsonl"), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    for extra in ([], ["--num-beams", "2"]):
        result = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    greedy, beams = sorted((tmp_path / "out").rglob("results.json"), key=lambda p: len(str(p)))
    assert beams.parent.name == greedy.parent.name + "-beams2", "a beam run must not resume the greedy log"
    assert json.loads(greedy.read_text())["num_beams"] == 1 and json.loads(beams.read_text())["num_beams"] == 2
    assert len((beams.parent / "utterances.jsonl").read_text().splitlines()) == 2


def test_eval_folder_follows_the_beam_width_that_decodes(make_model, tmp_path):
    # A model whose own default is a beam (the shipped one's is 4): a plain eval runs that beam and files it as
    # such; --num-beams 1 on it is greedy and must not resume the beam run's log (nor the other way round).
    model = make_model()
    model.config.generation_defaults["num_beams"] = 2
    model.save_pretrained(tmp_path / "m")
    with open(tmp_path / "manifest.jsonl", "w") as manifest:
        for row in rows_for(tmp_path)[:2]:
            manifest.write(json.dumps(row) + "\n")
    base = [sys.executable, "-m", "tiny_audio", "eval", "--model", str(tmp_path / "m"), "--data",
            str(tmp_path / "manifest.jsonl"), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    for extra in ([], ["--num-beams", "1"]):
        result = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    greedy, beams = sorted((tmp_path / "out").rglob("results.json"), key=lambda p: len(str(p)))
    assert beams.parent.name == greedy.parent.name + "-beams2"
    assert json.loads(beams.read_text())["num_beams"] == 2 and json.loads(greedy.read_text())["num_beams"] == 1
    assert json.loads(beams.read_text())["model"].endswith("(beams 2)")
    assert len((greedy.parent / "utterances.jsonl").read_text().splitlines()) == 2


def test_eval_refuses_to_resume_another_weights_log(make_model, tmp_path):
    import torch

    from tiny_audio.evaluate import RunMismatchError, run_evaluation
    from tiny_audio.peers import load_recognizer

    rows = rows_for(tmp_path)[:2]
    make_model().save_pretrained(tmp_path / "m")
    first = run_evaluation(load_recognizer(str(tmp_path / "m")), rows, tmp_path / "out", progress=False)
    assert first["weights_sha256"] == json.loads((tmp_path / "out" / "run.json").read_text())["weights_sha256"]
    # Retrained in place: same folder name, other weights. Resuming would report the old weights' transcripts.
    model = make_model()
    with torch.no_grad():
        next(model.projector.parameters()).add_(1.0)
    model.save_pretrained(tmp_path / "m")
    log = (tmp_path / "out" / "utterances.jsonl").read_text()
    with pytest.raises(RunMismatchError, match="another --output-dir"):
        run_evaluation(load_recognizer(str(tmp_path / "m")), rows, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "utterances.jsonl").read_text() == log, "the old log is kept"
    # The same weights resume as before.
    make_model().save_pretrained(tmp_path / "m2")
    run_evaluation(load_recognizer(str(tmp_path / "m2")), rows, tmp_path / "out2", progress=False)
    again = run_evaluation(load_recognizer(str(tmp_path / "m2")), rows, tmp_path / "out2", progress=False)
    assert again["utterances"] == 2 and len((tmp_path / "out2" / "utterances.jsonl").read_text().splitlines()) == 2


def test_eval_refuses_to_resume_with_another_lexicon(make_model, tmp_path):
    # Joint decoding's word list decodes too: lexicon.txt swapped at the same penalty must not resume the log.
    from tiny_audio.ctc import Lexicon
    from tiny_audio.evaluate import RunMismatchError, run_evaluation
    from tiny_audio.peers import load_recognizer

    rows = rows_for(tmp_path)[:2]
    model = make_model("whisper", "llama", encoder_lora_rank=0, ctc_head_dim=16)
    model.config.generation_defaults.update(ctc_head_weight=0.5, ctc_lexicon_penalty=1.0)
    model.lexicon = Lexicon(["a", "be"])
    model.save_pretrained(tmp_path / "m")
    first = run_evaluation(load_recognizer(str(tmp_path / "m")), rows, tmp_path / "out", progress=False)
    assert first["lexicon_sha256"] == json.loads((tmp_path / "out" / "run.json").read_text())["lexicon_sha256"]
    Lexicon(["a", "be", "sea"]).save(tmp_path / "m")
    with pytest.raises(RunMismatchError, match="lexicon"):
        run_evaluation(load_recognizer(str(tmp_path / "m")), rows, tmp_path / "out", progress=False)
    # Without the penalty the list plays no part, and is not recorded.
    off = load_recognizer(str(tmp_path / "m"), lexicon_penalty=0.0)
    assert off.describe()["lexicon_sha256"] is None


def test_eval_loops_logs_the_windows_that_cut_repetition_shortens(tmp_path, monkeypatch):
    # scripts/eval_loops.py says "no log file means no loop": it must see the cut transcription really makes.
    import importlib.util
    from pathlib import Path

    import tiny_audio.transcribe as transcribe

    spec = importlib.util.spec_from_file_location("eval_loops", Path(__file__).parent.parent / "scripts/eval_loops.py")
    eval_loops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_loops)
    log = tmp_path / "loops.jsonl"
    monkeypatch.setattr(transcribe, "cut_repetition", eval_loops._logged(log))
    out = transcribe.transcribe_windows(lambda batch: ["by-n-n-n-n-n-n now"] * len(batch), [tone(1.0, 300)], 16000)
    assert out[0].text == "by-n now"
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"raw": "by-n-n-n-n-n-n now", "cut": "by-n now"}
    ]
