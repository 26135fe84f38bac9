"""The character CTC head and joint CTC / LLM decoding: exact prefix scores, the choice they make, and the head's
training, saving and use in generation."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tiny_audio import ASRModel
from tiny_audio.config import ASRConfig
from tiny_audio.ctc import CHARS, SPACE, CTCPrefixScorer, Lexicon, _Prefix, ends_in_loop, spell, token_spellings
from tiny_audio.ctc_head import train_ctc_head
from tiny_audio.encoder import encode_audio
from tiny_audio.hub import model_card
from tiny_audio.model import count_parameters
from tiny_audio.peers import load_recognizer
from tiny_audio.testing import tone

V = len(CHARS) + 1
A, B = spell("a")[0], spell("b")[0]


def three_symbol_log_probs(frames: int, seed: int = 0) -> torch.Tensor:
    """1, T, V log-probabilities with all the mass on blank, 'a' and 'b', so every path can be enumerated."""
    torch.manual_seed(seed)
    x = torch.full((1, frames, V), -math.inf)
    x[0, :, [0, A, B]] = torch.randn(frames, 3).log_softmax(-1)
    return x


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out = [s for i, s in enumerate(path) if s != 0 and (i == 0 or s != path[i - 1])]
    return tuple(out)


def extended(scorer: CTCPrefixScorer, text: list[int]) -> _Prefix:
    return _Prefix(*scorer.extend([0], [scorer.empty(0)], [text])[0], False, bool(text))


def test_prefix_and_full_scores_are_exact():
    x = three_symbol_log_probs(6)
    scorer = CTCPrefixScorer(x, [[]], eos_token_id=99, weight=1.0)
    paths = [(p, float(sum(x[0, t, s] for t, s in enumerate(p)))) for p in itertools.product([0, A, B], repeat=6)]
    for text in ([A], [A, B], [A, A], [B, A, B]):
        prefix = extended(scorer, text)
        starts = [lp for p, lp in paths if collapse(p)[: len(text)] == tuple(text)]
        whole = [lp for p, lp in paths if collapse(p) == tuple(text)]
        assert math.isclose(prefix.psi, float(torch.tensor(starts).logsumexp(0)), abs_tol=1e-4)
        assert math.isclose(scorer.full_score(prefix), float(torch.tensor(whole).logsumexp(0)), abs_tol=1e-4)
    # Character by character or all at once: the same state.
    step = scorer.empty(0)
    for c in [B, A, B]:
        step = _Prefix(*scorer.extend([0], [step], [[c]])[0], False, True)
    assert math.isclose(step.psi, extended(scorer, [B, A, B]).psi, abs_tol=1e-5)
    # All next characters at once (for the guided candidates): the same as extending by each.
    for prefix in (scorer.empty(0), extended(scorer, [A, A]), extended(scorer, [B, A, B])):
        fast = scorer.next_char_scores([0], prefix.r_n[None], prefix.r_b[None], [prefix.last], [not prefix.started])
        slow = [scorer.extend([0], [prefix], [[c]])[0][3] for c in (A, B)]
        torch.testing.assert_close(fast[0, [A - 1, B - 1]], torch.tensor(slow, dtype=fast.dtype), atol=1e-5, rtol=0)
    # Frames past the clip's end (a shorter clip in a batch: blank certain) change no score.
    pad = torch.full((1, 4, V), -math.inf)
    pad[..., 0] = 0.0
    padded = CTCPrefixScorer(torch.cat([x, pad], 1), [[]], eos_token_id=99, weight=1.0)
    for text in ([A], [B, A, B]):
        assert math.isclose(extended(padded, text).psi, extended(scorer, text).psi, abs_tol=1e-6)
        assert math.isclose(
            padded.full_score(extended(padded, text)), scorer.full_score(extended(scorer, text)), abs_tol=1e-6
        )


def test_candidates_extended_together_score_as_each_alone():
    # Beam search extends many candidates at once, and those of one prefix often share letters (" the" and "the",
    # "the" and "then"): computed once per prefix and letters, each must still get its own prefix's state.
    x = torch.cat([three_symbol_log_probs(8, seed=1), three_symbol_log_probs(8, seed=2)])
    scorer = CTCPrefixScorer(x, [[]], eos_token_id=99, weight=1.0)
    ab = _Prefix(*scorer.extend([0], [scorer.empty(0)], [[A, B]])[0], False, True)
    starts = [(0, scorer.empty(0)), (0, ab), (1, scorer.empty(1))]
    texts = [[A], [A, B], [A, B], [A, B, A], [B], [SPACE, A], [], [A, A, B], [A, B, B]]
    items, prefixes, additions = zip(*[(b, p, t) for b, p in starts for t in texts], strict=True)
    together = scorer.extend(list(items), list(prefixes), list(additions))
    for b, p, t, (r_n, r_b, last, psi) in zip(items, prefixes, additions, together, strict=True):
        alone = scorer.extend([b], [p], [t])[0]
        torch.testing.assert_close((r_n, r_b), alone[:2])
        assert (last, psi) == alone[2:]


def test_digits_are_spelled_as_their_names_so_the_head_can_check_them():
    class Tokenizer:
        pieces = ["8", " 23", "-", "Ab", ",,,,,,,,", " ...", "--", '."']

        def __len__(self):
            return len(self.pieces)

        def decode(self, ids):
            return "".join(self.pieces[i] for i in ids)

    table = token_spellings(Tokenizer())
    assert table[0] == [SPACE, *spell("eight"), SPACE]
    assert table[1] == [SPACE, SPACE, *spell("two"), SPACE, SPACE, *spell("three"), SPACE]
    assert table[2] == [SPACE] and table[3] == spell("ab")
    # A run of one punctuation mark is never a candidate (None); two marks, or two different ones, are.
    assert table[4] is None and table[5] is None and table[6] == [SPACE, SPACE] and table[7] == [SPACE, SPACE]
    x = torch.zeros((1, 4, V)).log_softmax(-1)
    scorer = CTCPrefixScorer(x, [[SPACE, A], None, []], eos_token_id=2, weight=1.0, top_k=3)
    out = scorer(torch.zeros((1, 0), dtype=torch.long), torch.tensor([[-2.0, -0.1, -3.0]]))
    assert torch.isinf(out[0, 1]) and torch.isfinite(out[0, 0])


def test_joint_decoding_takes_the_token_the_audio_spells_and_ends_where_it_ends():
    # Frames that clearly say "ab": a, a, blank, b, blank.
    x = torch.full((1, 5, V), -20.0)
    for t, s in enumerate([A, A, 0, B, 0]):
        x[0, t, s] = 0.0
    x = x.log_softmax(-1)
    spellings = [[SPACE, A, B], [SPACE, B, A], [SPACE], []]  # token 0 " ab", 1 " ba", 2 a comma, 3 the end
    scorer = CTCPrefixScorer(x, spellings, eos_token_id=3, weight=1.0, top_k=4)
    llm = torch.tensor([[-0.5, -0.2, -3.0, -2.0]])  # the LLM prefers " ba"
    first = scorer(torch.zeros((1, 0), dtype=torch.long), llm.clone())
    assert first.argmax().item() == 0
    # After " ab" the audio is over: the end token wins against more letters.
    second = scorer(torch.tensor([[0]]), torch.tensor([[-0.3, -0.3, -3.0, -1.0]]))
    assert second.argmax().item() == 3
    # A row that continues no scored prefix (a finished one, padded on) keeps its scores, at no cost.
    torch.testing.assert_close(scorer(torch.tensor([[1, 3]]), llm.clone()), llm)
    # A token with no letter (punctuation) may not follow another: a run of them would cost nothing.
    scorer(torch.zeros((1, 0), dtype=torch.long), llm.clone())
    bare = scorer(torch.tensor([[2]]), torch.tensor([[-3.0, -3.0, -0.1, -5.0]]))
    assert torch.isinf(bare[0, 2]) and bare.argmax().item() in (0, 1)
    # Tokens outside the top_k are dropped.
    narrow = CTCPrefixScorer(x, spellings, eos_token_id=3, weight=1.0, top_k=1)
    assert torch.isinf(narrow(torch.zeros((1, 0), dtype=torch.long), llm.clone())[0, 0])


def test_where_the_head_reads_a_letter_straight_on_the_spaced_token_is_offered_too():
    # Frames that say "ab" then "ba" with no space between (the head hears word gaps faintly).
    x = torch.full((1, 8, V), -20.0)
    for t, s in enumerate([A, 0, B, 0, B, A, 0, 0]):
        x[0, t, s] = 0.0
    x = x.log_softmax(-1)
    # token 0 " ab", 1 " ba", 2 "ba", 3-6 filler the LLM likes best, 7 the end
    fill = spell("zz")
    spellings = [[SPACE, A, B], [SPACE, B, A], [B, A], *[[SPACE, *fill]] * 4, []]
    scorer = CTCPrefixScorer(x, spellings, eos_token_id=7, weight=1.0, top_k=2)  # top 2 by LLM, 1 guided
    scorer(torch.zeros((1, 0), dtype=torch.long), torch.tensor([[-0.1, -9.0, -9.0, -8.0, -8.0, -8.0, -8.0, -9.0]]))
    # After " ab": the LLM's best "b" token is the one with a space, and it is scored, not only the unspaced one.
    out = scorer(torch.tensor([[0]]), torch.tensor([[-9.0, -2.0, -5.0, -0.1, -0.2, -0.3, -0.4, -6.0]]))
    assert torch.isfinite(out[0, 1]) and torch.isinf(out[0, 2])
    assert out[0, 1] > out[0, 3]  # and the audio then picks it over the LLM's filler


def test_without_word_gaps_the_head_checks_the_letters_and_the_llm_places_the_spaces():
    # Frames that say "ab" then "ba" with no space between (the head hears word gaps faintly).
    x = torch.full((1, 8, V), -20.0)
    for t, s in enumerate([A, 0, B, 0, B, 0, A, 0]):
        x[0, t, s] = 0.0
    x = x.log_softmax(-1)
    spellings = [[SPACE, A, B], [SPACE, B, A], [B, A], [SPACE, *spell("zz")], []]  # " ab", " ba", "ba", " zz", end
    llm = torch.tensor([[-9.0, -0.5, -2.0, -1.0, -6.0]])  # after " ab" the LLM puts a space before "ba"

    def after_ab(word_gaps: bool) -> torch.Tensor:
        scorer = CTCPrefixScorer(x, spellings, eos_token_id=4, weight=1.0, top_k=5, word_gaps=word_gaps)
        scorer(torch.zeros((1, 0), dtype=torch.long), torch.tensor([[-0.1, -5.0, -5.0, -5.0, -9.0]]))
        return scorer(torch.tensor([[0]]), llm.clone())[0]

    with_gaps, without = after_ab(True), after_ab(False)
    assert with_gaps.argmax() == 2  # the head, hearing no gap, runs the words together against the LLM
    assert without.argmax() == 1  # without gaps the two spellings cost the audio the same: the LLM's space stands
    assert math.isclose(float(without[1] - llm[0, 1]), float(without[2] - llm[0, 2]), abs_tol=1e-9)
    assert without[3] < without[2]  # and the letters still count: " zz" is not what was said
    # A frame where the head hears a space is one more blank: "ab" then "ba" across it is the whole clip.
    spaced = x.clone()
    spaced[0, 3] = torch.full((V,), -20.0).index_fill(0, torch.tensor([SPACE]), 0.0).log_softmax(-1)
    scorer = CTCPrefixScorer(spaced, spellings, eos_token_id=4, weight=1.0, word_gaps=False)
    assert math.isclose(scorer.full_score(extended(scorer, [A, B, B, A])), 0.0, abs_tol=1e-6)


def test_a_lexicon_charges_once_for_each_word_that_leaves_it():
    lexicon = Lexicon(["the", "Jealous", "man", "don't", "éclair"])
    assert len(lexicon) == 4 and lexicon.begins("jea") and not lexicon.begins("jel") and lexicon.begins("")
    # Finished words not in it, and the unfinished last word if no known word begins with it.
    assert lexicon.unknown(("the", "jelous", "ma")) == 1 and lexicon.unknown(("the", "jel")) == 1
    assert lexicon.unknown_at_end(("the", "jelous", "ma")) == 2 and lexicon.unknown(()) == 0
    # Counted from a word on: the part a new token can change (the finished words before it stay as they were).
    assert lexicon.unknown(("the", "jelous", "ma"), 1) == 1 and lexicon.unknown(("the", "jelous", "ma"), 2) == 0
    assert lexicon.unknown_at_end(("the", "jelous", "ma"), 2) == 1
    assert "jealous'" in lexicon and "'the'" in lexicon and "'" in lexicon and lexicon.begins("'jea")
    # Frames that clearly say "ac"; the LLM slightly prefers " ab", a word, to " ac", which is not one.
    C = spell("c")[0]
    x = torch.full((1, 6, V), -20.0)
    for t, s in enumerate([A, 0, C, 0, 0, 0]):
        x[0, t, s] = 0.0
    x = x.log_softmax(-1)
    spellings = [[SPACE, A, B], [SPACE, A, C], [C], []]  # " ab", " ac", "c", the end
    llm = torch.tensor([[-1.0, -1.5, -3.0, -9.0]])

    def scorer(penalty: float, known: tuple[str, ...] = ("ab", "acc")) -> CTCPrefixScorer:
        words = Lexicon(known)
        return CTCPrefixScorer(x, spellings, 3, weight=1.0, top_k=4, lexicon=words, lexicon_penalty=penalty)

    start = torch.zeros((1, 0), dtype=torch.long)
    assert scorer(0.0, ("ab",))(start, llm.clone()).argmax() == 1  # the audio wins
    assert scorer(40.0, ("ab",))(start, llm.clone()).argmax() == 0  # unless " ac" leaves the lexicon
    # "ac" begins "acc", so it is charged only if the text ends there; each word is charged once.
    charged = scorer(5.0)
    first = charged(torch.zeros((1, 0), dtype=torch.long), llm.clone())
    free = scorer(0.0)
    unpaid = free(torch.zeros((1, 0), dtype=torch.long), llm.clone())
    torch.testing.assert_close(first[0, :2], unpaid[0, :2])  # " ab" and " ac" begin known words
    assert math.isclose(float(unpaid[0, 2] - first[0, 2]), 5.0)  # "c" begins none
    after, after_free = charged(torch.tensor([[1]]), llm.clone()), free(torch.tensor([[1]]), llm.clone())
    assert math.isclose(float(after_free[0, 3] - after[0, 3]), 5.0)  # the end: "ac" is no word
    assert math.isclose(float(after_free[0, 2] - after[0, 2]), 0.0)  # "acc" is one
    assert math.isclose(float(after_free[0, 1] - after[0, 1]), 5.0)  # " ac ac": the first "ac" ended unknown


def test_the_token_that_would_make_a_loop_is_refused():
    from tiny_audio.transcribe import cut_repetition

    # The loops cut_repetition cuts, and only those (ends_in_loop sees the words as the head spells them).
    for text in ("by n n n n n", "i went home i went home i went home i went home", "no no no no", "a b a b a b"):
        words = tuple(text.split())
        assert ends_in_loop(words) == (cut_repetition(text) != text), text
    # Frames that say "ab" then nothing: a run of " a" tokens would each find little to pay for at weight 0.1.
    x = torch.full((1, 12, V), -3.0)
    for t, s in enumerate([A, 0, B, 0] + [0] * 8):
        x[0, t, s] = 0.0
    x = x.log_softmax(-1)
    spellings = [[SPACE, A], [SPACE, B], []]  # token 0 " a", 1 " b", 2 the end
    scorer = CTCPrefixScorer(x, spellings, eos_token_id=2, weight=0.1, top_k=3)
    llm = torch.tensor([[-0.1, -3.0, -9.0]])  # an LLM caught in a loop: " a" again and again
    tokens: list[int] = []
    for _ in range(8):
        out = scorer(torch.tensor([tokens], dtype=torch.long), llm.clone())
        tokens.append(int(out.argmax()))
        if tokens[-1] == 2:
            break
    assert tokens[:4] == [0, 0, 0, 0] and tokens[4] != 0  # the fifth " a" is refused


def rows_for(tmp_path, n=6):
    rows = []
    for i in range(n):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone(0.8 + 0.2 * i, 200 + 40 * i, seed=i), 16000)
        rows.append({"audio": str(path), "text": ["a cab", "a bad cab", "ab"][i % 3], "duration": 0.8 + 0.2 * i})
    return rows


def test_a_head_with_layers_scores_a_clip_the_same_alone_and_padded_in_a_batch():
    from tiny_audio.ctc import CTCHead

    torch.manual_seed(0)
    head = CTCHead(16, 32, layers=2).eval()
    assert len(head.layers) == 2
    long, short = torch.randn(1, 20, 16), torch.randn(1, 12, 16)
    batch = torch.cat([long, torch.cat([short, torch.randn(1, 8, 16)], 1)])  # the short clip padded with noise
    padded = head.padded_log_probs(batch, torch.tensor([20, 12]))
    alone = head.padded_log_probs(short, torch.tensor([12]))
    n = CTCHead.output_length(12)
    torch.testing.assert_close(padded[1, :n], alone[0, :n], atol=1e-5, rtol=0)
    assert (padded[1, n:, 0] == 0).all()  # past its end the blank is certain


def test_a_trained_head_is_saved_loaded_and_used_by_generation(make_model, tmp_path):
    model = make_model("whisper", "llama", encoder_lora_rank=0)
    rows = rows_for(tmp_path)
    history = train_ctc_head(model, rows, rows[:2], epochs=6, learning_rate=5e-3, hidden_dim=16, log=lambda _: None)
    assert len(history) == 6 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"dev_loss", "dev_greedy_wer"} <= set(history[-1])
    # --warm-start trains on from the model's own head (at a vanishing learning rate it stays as it was), and only
    # from a head of the asked width and depth.
    before = {k: v.clone() for k, v in model.ctc_head.state_dict().items()}
    train_ctc_head(model, rows, epochs=1, learning_rate=1e-12, hidden_dim=16, warm_start=True, log=lambda _: None)
    for key, value in before.items():
        torch.testing.assert_close(model.ctc_head.state_dict()[key], value)
    with pytest.raises(ValueError, match="warm-start"):
        train_ctc_head(model, rows, hidden_dim=16, layers=1, warm_start=True, log=lambda _: None)
    # A given feature cache is the one read (benchmarks/ctc_head_mean.py's layer probe passes one with `upto`).
    from tiny_audio.features import FeatureCache

    train_ctc_head(model, rows, epochs=1, hidden_dim=16, cache=FeatureCache(model, tmp_path / "frames", upto=1),
                   log=lambda _: None)  # fmt: skip
    assert any((tmp_path / "frames").rglob("*.npz"))
    model.config.generation_defaults["ctc_head_weight"] = 0.5
    model.save_pretrained(tmp_path / "saved")
    loaded = ASRModel.from_pretrained(tmp_path / "saved")
    assert loaded.config.ctc_head_dim == 16
    head = sum(p.numel() for p in loaded.ctc_head.parameters())
    assert loaded.parameter_report()["ctc_head"]["total"] == head
    assert count_parameters(ASRConfig.from_pretrained(tmp_path / "saved"))["ctc_head"]["total"] == head
    for key, value in model.ctc_head.state_dict().items():
        torch.testing.assert_close(loaded.ctc_head.state_dict()[key], value)

    inputs = loaded.processor([tone(1.0, 300, seed=9), tone(0.6, 250, seed=8)])
    with_head = loaded.generate(**inputs, num_beams=2, max_new_tokens=6)
    without = loaded.generate(**inputs, num_beams=2, max_new_tokens=6, ctc_head_weight=0.0)
    greedy = loaded.generate(**inputs, max_new_tokens=6)
    assert with_head.shape[0] == without.shape[0] == greedy.shape[0] == 2
    # `tiny-audio eval` names and records the weight that decodes: the model's own unless one is asked for.
    assert load_recognizer(str(tmp_path / "saved")).describe()["ctc_head_weight"] == 0.5
    off = load_recognizer(str(tmp_path / "saved"), ctc_head_weight=0.0)
    assert off.decoding.ctc_head_weight == 0.0 and "CTC" not in off.name
    # A lexicon travels with the model; the penalty needs one.
    with pytest.raises(ValueError, match="lexicon"):
        loaded.generate(**inputs, max_new_tokens=6, ctc_lexicon_penalty=1.0)
    loaded.lexicon = Lexicon(["a", "be"])
    loaded.save_pretrained(tmp_path / "with-lexicon")
    assert ASRModel.from_pretrained(tmp_path / "with-lexicon").lexicon.sorted == ["a", "be"]
    lexical = loaded.generate(**inputs, num_beams=2, max_new_tokens=6, ctc_lexicon_penalty=1.0)
    assert lexical.shape[0] == 2
    # `tiny-audio eval` records the lexicon penalty and word gaps that decode (none without the head's weight).
    described = load_recognizer(str(tmp_path / "with-lexicon"), lexicon_penalty=1.0).describe()
    assert described["ctc_lexicon_penalty"] == 1.0 and described["ctc_word_gaps"] is True
    off = load_recognizer(str(tmp_path / "with-lexicon"), ctc_head_weight=0.0, lexicon_penalty=1.0)
    assert off.decoding.ctc_lexicon_penalty == 0
    # Each clip decodes the same alone as in the batch (the head's padding frames are blank).
    alone = loaded.generate(**loaded.processor([tone(0.6, 250, seed=8)]), max_new_tokens=6)
    n = alone.shape[1]
    assert greedy[1, :n].tolist() == alone[0].tolist()


def test_a_head_with_its_own_copy_of_the_encoder_s_top_layers_starts_as_the_model_s_head(make_model, tmp_path):
    """`encoder_layers`: warm-started from a plain head, the copy begins as the tower's own top layers, so the head
    first scores exactly as before; it then trains apart from the tower (whose frames, the LLM's input, stay), is
    saved and loaded, and joint decoding feeds it the hidden states below the copied layers."""
    model = make_model("whisper", "llama", encoder_lora_rank=0)
    rows = rows_for(tmp_path)
    train_ctc_head(model, rows, epochs=2, learning_rate=5e-3, hidden_dim=16, log=lambda _: None)
    tower = {k: v.clone() for k, v in model.audio_tower.state_dict().items()}
    inputs = model.processor([tone(1.0, 300, seed=9), tone(0.6, 250, seed=8)])
    features, lengths = inputs["input_features"], inputs["audio_attention_mask"].sum(-1)
    frames, frame_lengths = encode_audio(model.audio_tower, features, lengths)
    plain = model.ctc_head.eval().padded_log_probs(frames, frame_lengths)
    plain_ids = model.generate(**inputs, num_beams=2, max_new_tokens=6, ctc_head_weight=0.5)

    layers = len(model.audio_tower.layers)
    train_ctc_head(model, rows, epochs=1, learning_rate=1e-12, hidden_dim=16, warm_start=True, encoder_layers=1,
                   encoder_learning_rate=1e-12, log=lambda _: None)  # fmt: skip
    assert model.config.ctc_head_encoder_layers == 1 and model.ctc_head.top.start == layers - 1
    below, _ = encode_audio(model.audio_tower, features, lengths, upto=layers - 1)
    torch.testing.assert_close(model.ctc_head.padded_log_probs(below, frame_lengths), plain, atol=1e-4, rtol=0)
    assert model.generate(**inputs, num_beams=2, max_new_tokens=6, ctc_head_weight=0.5).tolist() == plain_ids.tolist()

    history = train_ctc_head(model, rows, rows[:2], epochs=3, learning_rate=5e-3, hidden_dim=16, warm_start=True,
                             encoder_layers=1, encoder_learning_rate=1e-2, log=lambda _: None)  # fmt: skip
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    copied = model.ctc_head.top.layers[0].fc1.weight
    assert not torch.equal(copied, model.audio_tower.layers[-1].fc1.weight)  # the copy trained ...
    for key, value in model.audio_tower.state_dict().items():
        torch.testing.assert_close(value, tower[key])  # ... and the tower did not
    from tiny_audio.features import FeatureCache

    with pytest.raises(ValueError, match="upto="):  # the copy reads the hidden states below it, not the output
        train_ctc_head(model, rows, hidden_dim=16, encoder_layers=1, cache=FeatureCache(model, tmp_path / "f"),
                       log=lambda _: None)  # fmt: skip
    with pytest.raises(ValueError, match="warm-start"):  # a head with a copy of 1 layer cannot become one of 2
        train_ctc_head(model, rows, hidden_dim=16, warm_start=True, encoder_layers=2, log=lambda _: None)

    model.config.generation_defaults["ctc_head_weight"] = 0.5
    model.save_pretrained(tmp_path / "saved")
    loaded = ASRModel.from_pretrained(tmp_path / "saved")
    assert loaded.config.ctc_head_encoder_layers == 1
    assert "A character CTC head on its own fine-tuned copy of the encoder's top 1 layer checks" in model_card(
        tmp_path / "saved"
    )
    for key, value in model.ctc_head.state_dict().items():
        torch.testing.assert_close(loaded.ctc_head.state_dict()[key], value)
    assert loaded.parameter_report()["ctc_head"]["total"] == sum(p.numel() for p in model.ctc_head.parameters())
    with_head = loaded.generate(**inputs, num_beams=2, max_new_tokens=6, ctc_head_weight=0.5)
    assert with_head.shape[0] == 2
    # Each clip decodes the same alone as in the batch through the copied layers too.
    alone = loaded.generate(**loaded.processor([tone(0.6, 250, seed=8)]), num_beams=2, max_new_tokens=6,
                            ctc_head_weight=0.5)  # fmt: skip
    n = alone.shape[1]
    assert with_head[1, :n].tolist() == alone[0].tolist()


def test_the_copy_of_an_adapted_encoder_s_top_layers_runs_as_they_do(make_model):
    from tiny_audio.encoder import EncoderTop, encode_top

    model = make_model("whisper", "llama")  # LoRA in the encoder, so the copy must fold it in
    assert any("lora_" in k for k in model.audio_tower.state_dict())
    torch.manual_seed(0)
    for p in model.audio_tower.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.1)  # adapters that change something (B starts at zero)
    inputs = model.processor([tone(1.0, 300, seed=9)])
    features, feature_lengths = inputs["input_features"], inputs["audio_attention_mask"].sum(-1)
    layers = len(model.audio_tower.layers)
    with torch.no_grad():
        below, lengths = encode_audio(model.audio_tower, features, feature_lengths, upto=layers - 1)
        top = EncoderTop.from_tower(model.audio_tower, 1).eval()
        torch.testing.assert_close(top(below, lengths), encode_top(model.audio_tower, below, lengths, layers - 1))


def test_the_head_also_learns_silence_and_noise_clips(make_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_AUDIO_CACHE", str(tmp_path / "cache"))
    model = make_model("whisper", "llama", encoder_lora_rank=0)
    lines = []
    train_ctc_head(model, rows_for(tmp_path, 4), epochs=1, hidden_dim=8, silence_share=0.5, log=lines.append)
    assert lines[0].startswith("CTC head: 6 training clips")  # 4 with speech, 2 with an empty text
    assert len(list((tmp_path / "cache" / "silence").glob("*.flac"))) == 2


def test_ctc_head_command_writes_a_model_and_refuses_a_used_folder(make_model, tmp_path):
    model = make_model("whisper", "llama", encoder_lora_rank=0)
    model.save_pretrained(tmp_path / "base")
    (tmp_path / "data").mkdir()
    rows = rows_for(tmp_path / "data")
    manifest = tmp_path / "data" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({**r, "audio": Path(r["audio"]).name}) + "\n" for r in rows))

    def cli(*args):
        command = [sys.executable, "-m", "tiny_audio", "ctc-head", str(tmp_path / "base"), "--data", str(manifest)]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)

    done = cli("--epochs", "2", "--hidden-dim", "8", "--out", str(tmp_path / "with-head"), "--weight", "0.4")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "with-head" / "config.json").read_text())
    assert config["ctc_head_dim"] == 8 and config["generation_defaults"]["ctc_head_weight"] == 0.4
    assert len(json.loads((tmp_path / "with-head" / "ctc_head_log.json").read_text())) == 2
    again = cli("--out", str(tmp_path / "with-head"))
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    # --encoder-layers: the head's own copy of the encoder's top layers, saved so that the model loads with it.
    top = cli("--epochs", "1", "--hidden-dim", "8", "--encoder-layers", "1", "--out", str(tmp_path / "top"))
    assert top.returncode == 0, top.stderr
    assert json.loads((tmp_path / "top" / "config.json").read_text())["ctc_head_encoder_layers"] == 1
    assert ASRModel.from_pretrained(tmp_path / "top").ctc_head.top is not None
    deep = cli("--encoder-layers", "9", "--out", str(tmp_path / "deep"))
    assert deep.returncode == 2 and "cannot copy the top 9" in deep.stderr and "Traceback" not in deep.stderr
    # A lexicon comes as a word list with its notice beside it; a penalty without one is a user mistake.
    (tmp_path / "words.txt").write_text("Apple\nbe\néclair\n")
    (tmp_path / "lexicon_notice.txt").write_text("a list of three words, public domain\n")
    lexical = cli("--epochs", "1", "--hidden-dim", "8", "--out", str(tmp_path / "lexical"),
                  "--lexicon", str(tmp_path / "words.txt"), "--lexicon-penalty", "3")  # fmt: skip
    assert lexical.returncode == 0, lexical.stderr
    assert (tmp_path / "lexical" / "lexicon.txt").read_text() == "apple\nbe\n"
    assert "public domain" in (tmp_path / "lexical" / "lexicon_notice.txt").read_text()
    config = json.loads((tmp_path / "lexical" / "config.json").read_text())
    assert config["generation_defaults"]["ctc_lexicon_penalty"] == 3
    alone = cli("--out", str(tmp_path / "no-list"), "--lexicon-penalty", "3")
    assert alone.returncode == 2 and "--lexicon" in alone.stderr and "Traceback" not in alone.stderr
