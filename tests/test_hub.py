"""tiny-audio push against a local stand-in for the Hub: what arrives, and clear errors before anything is sent."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import yaml
from safetensors.torch import load

from tiny_audio import ASRModel
from tiny_audio.hub import card_metadata, export_for_hub

TOKEN = "hf_test_token"


class FakeHub:
    """Answers the Hub API calls huggingface_hub makes to publish a folder: whoami, repo creation, preupload
    (every file 'regular', so contents travel inline in the commit) and the NDJSON commit."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.created: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.commit_summary = ""
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append((self.command, self.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                path = self.path.split("?")[0]
                if path == "/api/whoami-v2":
                    return self._reply(200, {"type": "user", "name": "student", "auth": {"type": "access_token"}})
                if path == "/api/repos/create":
                    request = json.loads(body)
                    hub.created.append(request)
                    return self._reply(200, {"url": f"{hub.url}/{request['organization']}/{request['name']}"})
                if path == "/api/validate-yaml":
                    return self._reply(*hub.validate(json.loads(body)["content"]))
                if "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                            ]
                        },  # fmt: skip
                    )
                if "/commit/" in path:
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "header":
                            hub.commit_summary = item["value"]["summary"]
                        elif item["key"] == "file":
                            hub.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    repo = path.removeprefix("/api/models/").split("/commit/")[0]
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40})
                return self._reply(404, {"error": f"the stand-in does not know {self.command} {path}"})

            do_GET = do_POST = do_PUT = _handle

        self.validated: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def validate(self, content: str) -> tuple[int, dict]:
        """Like the Hub's metadata check: the YAML block parses, and a model-index reads as evaluation results."""
        from huggingface_hub.repocard_data import model_index_to_eval_results

        self.validated.append(content)
        try:
            meta = card_metadata(content)
            if "model-index" in meta:
                model_index_to_eval_results(meta["model-index"])
        except Exception as err:  # noqa: BLE001 - any failure is an invalid card
            return 400, {"errors": [{"message": str(err)}]}
        return 200, {"errors": [], "warnings": []}


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.server.shutdown()


def push(*args: str, token: str | None = TOKEN, home=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")}
    env["HF_HOME"] = str(home)  # no stored login to fall back on
    env["TINY_AUDIO_DEBUG"] = os.environ.get("TINY_AUDIO_DEBUG_TESTS", "")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tiny_audio", "push", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def training_run(make_model, tmp_path):
    """A training run's folder as the trainer leaves it: a complete checkpoint with optimizer state."""
    model = make_model()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    model.save_pretrained(checkpoint)
    (checkpoint / "train_config.yaml").write_text(yaml.safe_dump({"training": {"stage": "decoder"}}))
    torch.save({"state": {}}, checkpoint / "optimizer.pt")
    (checkpoint / "trainer_state.json").write_text("{}")
    return model, tmp_path / "run"


def test_push_exports_a_run_and_uploads_a_loadable_model_with_its_card(hub, training_run, clips, tmp_path):
    model, run = training_run
    scores = tmp_path / "results.json"
    scores.write_text(json.dumps({"model": "m", "data": "dev/manifest.jsonl", "wer": 0.25, "cer": 0.1, "rtfx": 3.0}))
    result = push(
        str(run), "--repo-id", "student/tiny-asr", "--private", "--endpoint", hub.url, "--results", str(scores),
        home=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "published" in result.stdout and "student/tiny-asr" in result.stdout
    assert len(hub.created) == 1, hub.created
    assert hub.created[0]["name"] == "tiny-asr" and hub.created[0]["organization"] == "student"
    assert hub.created[0].get("private") is True or hub.created[0].get("visibility") == "private", hub.created
    arrived = set(hub.files)
    assert {"config.json", "model.safetensors", "README.md", "model.py", "pipeline.py", "train_config.yaml"} <= arrived
    assert not {"optimizer.pt", "trainer_state.json"} & arrived, "trainer state stays home"
    config = json.loads(hub.files["config.json"])
    assert config["auto_map"]["AutoModel"] == "model.ASRModel"
    # The tiny backbones are folders on this machine, so the base weights travel with the model.
    assert config["base_weights_included"] is True
    weights = load(hub.files["model.safetensors"])
    assert any(k.startswith("language_model.") and "lora_" not in k for k in weights)
    card = hub.files["README.md"].decode()
    assert hub.validated == [card], "the card's metadata went through the Hub's check"
    meta = card_metadata(card)
    assert meta["pipeline_tag"] == "automatic-speech-recognition"
    assert meta["model-index"][0]["name"] == "student/tiny-asr"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 25.0
    assert "stage: decoder" in card, "the training recipe is quoted"

    # What arrived is a complete model: it loads with no other file and gives the same output.
    folder = tmp_path / "downloaded"
    folder.mkdir()
    for name, data in hub.files.items():
        (folder / name).write_bytes(data)
    loaded = ASRModel.from_pretrained(folder)
    batch = model.processor(clips[:1])
    assert torch.equal(loaded.generate(**batch, max_new_tokens=5), model.generate(**batch, max_new_tokens=5))


def test_no_token_is_a_clear_error_before_anything_is_sent(hub, training_run, tmp_path):
    _, run = training_run
    result = push(str(run), "--repo-id", "student/x", "--endpoint", hub.url, token=None, home=tmp_path)
    assert result.returncode == 2
    assert "no Hugging Face token" in result.stderr and "Traceback" not in result.stderr
    assert hub.requests == []


def test_unreachable_hub_and_rejected_token_are_clear_errors(hub, training_run, tmp_path):
    _, run = training_run
    closed = "http://127.0.0.1:9"  # discard port: nothing listens there
    result = push(str(run), "--repo-id", "student/x", "--endpoint", closed, home=tmp_path)
    assert result.returncode == 2 and "cannot reach the Hub" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = push(str(run), "--repo-id", "student/x", "--endpoint", hub.url, token="hf_wrong", home=tmp_path)
    assert result.returncode == 2 and "refused the token" in result.stderr, result.stderr
    assert [path for _, path in hub.requests] == ["/api/whoami-v2"], "only the token check, no upload"


def test_push_rejects_what_is_not_a_model(hub, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        ((str(tmp_path / "missing"), "--repo-id", "a/b"), "no such model folder"),
        ((str(empty), "--repo-id", "a/b"), "holds no saved model"),
    ]:
        result = push(*args, "--endpoint", hub.url, home=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert hub.requests == []


def test_offline_named_backbones_are_published_under_their_hub_originals(make_model, tmp_path):
    folder = tmp_path / "m"
    make_model().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(audio_model_id="whisper-base", text_model_id="smollm2-135m-instruct")
    (folder / "config.json").write_text(json.dumps(config))
    out = export_for_hub(folder, tmp_path / "out", include_base_weights=False)
    exported = json.loads((out / "config.json").read_text())
    assert exported["audio_model_id"] == "openai/whisper-base"
    assert exported["text_model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    shutil.rmtree(out)


def test_card_tells_greedy_from_beam_results_and_indexes_the_default_decoding(make_model, tmp_path):
    from tiny_audio.hub import model_card

    model = make_model()
    model.config.generation_defaults["num_beams"] = 4
    model.save_pretrained(tmp_path / "m")
    greedy = {"model": "m", "system": "tiny-audio", "data": "dev", "wer": 0.2, "cer": 0.1, "rtfx": 8.0, "num_beams": 1}
    beams = {**greedy, "wer": 0.18, "rtfx": 4.0, "num_beams": 4}
    peer = {"model": "faster-whisper:base:int8", "system": "faster-whisper", "data": "dev", "wer": 0.07, "rtfx": 11.0}
    card = model_card(tmp_path / "m", results=[beams, greedy, peer])
    assert "| this model, beams 4 | dev | 18.00 |" in card and "| this model, greedy | dev | 20.00 |" in card
    assert "| faster-whisper:base:int8 | dev | 7.00 |" in card
    index = card_metadata(card)["model-index"][0]["results"]
    assert [r["metrics"][0]["value"] for r in index] == [18.0], "the index holds the default decoding's score only"
    assert "beam search of width 4 by default" in card
    alone = model_card(tmp_path / "m", results=[greedy])
    assert "| this model | dev | 20.00 |" in alone


def test_a_decoding_keeps_only_the_settings_that_take_effect():
    from tiny_audio.peers import Decoding

    asked = {"num_beams": 16, "ctc_head_weight": 0.2, "ctc_word_gaps": False, "ctc_lexicon_penalty": 5,
             "lm_rescore_weight": 0.3, "ctc_rescore_weight": 0.5}  # fmt: skip
    full = Decoding.of(asked)
    assert full == Decoding(16, 0.2, 5.0, False, 0.3, 0.5)
    assert full.suffix() == "-beams16-ctc0.2-nogaps-lex5-lm0.3-rctc0.5"
    assert full.parts() == ["beams 16", "CTC 0.2 without word gaps", "lexicon 5", "LM rescoring 0.3",
                            "CTC rescoring 0.5"]  # fmt: skip
    assert full.parts(gaps_apart=True)[1:3] == ["CTC 0.2", "no word gaps"]
    # Greedy decoding has nothing to rescore; without a head (or its weight) no lexicon, gaps or CTC rescoring.
    assert Decoding.of({**asked, "num_beams": 1}) == Decoding(1, 0.2, 5.0, False, 0.0, 0.2)
    assert Decoding.of(asked, has_head=False) == Decoding(16, 0.0, 0.0, True, 0.3, 0.0)
    assert Decoding.of({**asked, "ctc_head_weight": 0}).suffix() == "-beams16-lm0.3"
    assert Decoding.of({}) == Decoding() and Decoding().suffix() == "" and Decoding().parts() == []


def test_rescoring_weights_are_named_recorded_and_carded_as_the_model_decodes(make_model, tmp_path):
    """The LM and CTC rescoring weights decode by default from config.json; `tiny-audio eval` names and records
    them (folder suffix included), and the card labels its rows with them and indexes the default's."""
    from tiny_audio.ctc import CTCHead
    from tiny_audio.hub import model_card
    from tiny_audio.peers import decoding_suffix, load_recognizer

    model = make_model()
    model.config.ctc_head_dim = 16
    model.ctc_head = CTCHead(model.config.audio_config.hidden_size, 16)
    model.config.generation_defaults.update(
        num_beams=4, ctc_head_weight=0.2, lm_rescore_weight=0.3, ctc_rescore_weight=0.5
    )
    model.save_pretrained(tmp_path / "m")
    own = load_recognizer(str(tmp_path / "m"))
    described = own.describe()
    assert (described["lm_rescore_weight"], described["ctc_rescore_weight"]) == (0.3, 0.5)
    assert "(LM rescoring 0.3) (CTC rescoring 0.5)" in own.name
    assert decoding_suffix(described) == "-beams4-ctc0.2-lm0.3-rctc0.5"
    # Asked for, the search's own weight switches CTC rescoring off; greedy decoding has nothing to rescore.
    same = load_recognizer(str(tmp_path / "m"), ctc_rescore_weight=0.2).describe()
    assert decoding_suffix(same) == "-beams4-ctc0.2-lm0.3"
    greedy = load_recognizer(str(tmp_path / "m"), num_beams=1).describe()
    assert decoding_suffix(greedy) == "-ctc0.2" and greedy["ctc_rescore_weight"] == 0.2
    text = own.transcribe([torch.randn(16000).numpy() * 0.1])
    assert isinstance(text[0], str)

    plain = {"model": "m", "system": "tiny-audio", "data": "dev", "wer": 0.11, "rtfx": 4.0, "num_beams": 4,
             "ctc_head_weight": 0.2}  # fmt: skip
    rescored = {**plain, "wer": 0.09, "lm_rescore_weight": 0.3, "ctc_rescore_weight": 0.5}
    card = model_card(tmp_path / "m", results=[rescored, plain])
    assert "| this model, beams 4, CTC 0.2, LM rescoring 0.3, CTC rescoring 0.5 | dev | 9.00 |" in card
    assert "| this model, beams 4, CTC 0.2 | dev | 11.00 |" in card
    assert "weighing 0.5 instead of the search's 0.2 (`ctc_rescore_weight`)" in card
    assert '`asr("audio.flac", lm_rescore_weight=0, ctc_rescore_weight=0.2)` keeps' in card
    assert [r["metrics"][0]["value"] for r in card_metadata(card)["model-index"][0]["results"]] == [9.0]


def test_card_indexes_the_lexicon_decoding_when_the_model_ships_a_lexicon(make_model, tmp_path):
    from tiny_audio.ctc import CTCHead, Lexicon
    from tiny_audio.hub import model_card

    model = make_model()
    model.config.ctc_head_dim = 16
    model.ctc_head = CTCHead(model.config.audio_config.hidden_size, 16)
    model.config.generation_defaults.update(num_beams=4, ctc_head_weight=0.2, ctc_lexicon_penalty=5.0)
    model.lexicon = Lexicon(["one", "two", "three"], notice="three words, public domain")
    model.save_pretrained(tmp_path / "m")
    plain = {"model": "m", "system": "tiny-audio", "data": "dev", "wer": 0.11, "rtfx": 4.0, "num_beams": 4,
             "ctc_head_weight": 0.2}  # fmt: skip
    lexical = {**plain, "wer": 0.10, "ctc_lexicon_penalty": 5.0}
    gapless = {**lexical, "wer": 0.09, "ctc_word_gaps": False}
    card = model_card(tmp_path / "m", results=[lexical, plain, gapless])
    assert "| this model, beams 4, CTC 0.2, lexicon 5 | dev | 10.00 |" in card
    assert "| this model, beams 4, CTC 0.2 without word gaps, lexicon 5 | dev | 9.00 |" in card
    assert "| this model, beams 4, CTC 0.2 | dev | 11.00 |" in card
    assert [r["metrics"][0]["value"] for r in card_metadata(card)["model-index"][0]["results"]] == [10.0]
    assert "lexicon (`lexicon.txt`, 3 words) costs 5" in card and "lexicon_notice.txt" in card
