"""The pinned WER normalizer (a table of its behaviour) and the WER arithmetic."""

from __future__ import annotations

import pytest

from tiny_audio.evaluate import normalize_text, word_error_rate


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("And so, my fellow Americans, ask not", "and so my fellow americans ask not"),
        ("THIS LITTLE WORK WAS FINISHED", "this little work was finished"),
        ("Mr. Smith paid $20.", "mister smith paid $20"),
        ("uh I colour it um", "i color it"),
        ("TWO THOUSAND AND TWENTY", "2020"),
        ("J P E G FOUR", "j p e g 4"),
        ("it's [laughter] fine", "it is fine"),
        ("", ""),
    ],
)
def test_normalizer_table(raw, normalized):
    assert normalize_text(raw) == normalized


def test_word_error_rate_counts():
    score = word_error_rate(["the cat sat on the mat", "hello"], ["the cat sat on mat", "hello there"])
    assert (score["substitutions"], score["deletions"], score["insertions"], score["words"]) == (0, 1, 1, 7)
    assert score["wer"] == pytest.approx(2 / 7)
    assert word_error_rate(["HELLO, World!"], ["hello world"])["wer"] == 0
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])
