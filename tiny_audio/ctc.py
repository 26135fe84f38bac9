"""A character CTC head on the encoder frames, and joint CTC / LLM decoding with it.

An LLM decoder trained on a few hours of speech guesses from context where the audio is unclear: most of the
default model's dev errors are fluent substitutions ("finalized" for "finished") and it may stop early or run on.
A small CTC head reading the same encoder frames spells what was said, letter by letter, and cannot paraphrase.
Joint decoding (Watanabe et al., "Hybrid CTC/attention architecture for end-to-end speech recognition", 2017) adds
to each candidate token's LLM log-probability `ctc_weight` times the change it makes to the CTC prefix
log-probability of the text so far; the end token gets the CTC probability that the text is all that was said.
The LLM's tokens are spelled out in the head's characters (letters and apostrophe; anything else is a space).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from transformers import LogitsProcessor

CHARS = " abcdefghijklmnopqrstuvwxyz'"  # id 0 is the CTC blank, so a character's id is its position here + 1
SPACE = CHARS.index(" ") + 1


def spell(text: str) -> list[int]:
    """Character ids of a transcript as the head is trained on it: lower case, letters and apostrophes, any other
    run of characters one space, no space at either end."""
    text = re.sub(r"[^a-z']+", " ", text.lower()).strip()
    return [CHARS.index(c) + 1 for c in text]


def without_word_gaps(log_probs: torch.Tensor) -> torch.Tensor:
    """Head log-probabilities (..., V) with the space's probability joined to the blank's and the space impossible:
    the head then checks letters alone (joint decoding with ctc_word_gaps=False)."""
    out = log_probs.clone()
    out[..., 0] = torch.logaddexp(log_probs[..., 0], log_probs[..., SPACE])
    out[..., SPACE] = -math.inf
    return out


class CTCHead(nn.Module):
    """Encoder frames (B, T, C at 50 per second) -> character log-probabilities at 25 per second: LayerNorm, two
    1-D convolutions (the first of stride 2) with GELU, optionally `layers` pre-norm Transformer layers (for context
    beyond the convolutions' few frames), a linear layer. About 1.2M parameters for whisper-base without layers,
    1.2M more per layer at width 384. With `encoder_top` (an EncoderTop, 3.2M parameters a layer for whisper-base)
    it reads the encoder's hidden states below the copied layers instead of its output."""

    def __init__(
        self,
        encoder_dim: int,
        hidden_dim: int = 384,
        dropout: float = 0.2,
        layers: int = 0,
        encoder_top: nn.Module | None = None,
    ):
        super().__init__()
        # The head's own copy of the encoder's top layers (EncoderTop), fine-tuned with it: the tower's frames are
        # what the LLM was trained to read and stay as they are, while the head may reshape its own. Its input is
        # then the tower's hidden states below those layers.
        self.top = encoder_top
        self.norm = nn.LayerNorm(encoder_dim)
        self.drop = nn.Dropout(dropout)
        self.conv1 = nn.Conv1d(encoder_dim, hidden_dim, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv1d(hidden_dim, hidden_dim, kernel_size=3, padding=1)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                hidden_dim,
                max(1, hidden_dim // 64),
                2 * hidden_dim,
                dropout=0.1,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )  # fmt: skip
            for _ in range(layers)
        )
        self.out = nn.Linear(hidden_dim, len(CHARS) + 1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """B, T', V log-probabilities; `lengths` (frames per clip) keeps the layers from attending to padding."""

        def unpadded(x: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
            # Zero past each clip's end before a convolution, as it pads a clip alone: a clip then scores the same
            # alone or in a batch.
            return x if n is None else x * (torch.arange(x.shape[1], device=x.device)[None] < n[:, None])[..., None]

        n = None if lengths is None else self.output_length(lengths)
        frames = frames.to(self.norm.weight.dtype)
        if self.top is not None:
            full = torch.full(frames.shape[:1], frames.shape[1], device=frames.device)
            frames = self.top(frames, full if lengths is None else lengths)
        x = unpadded(self.norm(frames), lengths)
        x = nn.functional.gelu(self.conv1(self.drop(x).transpose(1, 2))).transpose(1, 2)
        x = nn.functional.gelu(self.conv2(self.drop(unpadded(x, n)).transpose(1, 2))).transpose(1, 2)
        if len(self.layers):
            padding = None if n is None else torch.arange(x.shape[1], device=x.device)[None] >= n[:, None]
            for layer in self.layers:
                x = layer(x, src_key_padding_mask=padding)
        return self.out(self.drop(x)).float().log_softmax(-1)

    @staticmethod
    def output_length(frames: int | torch.Tensor) -> int | torch.Tensor:
        return (frames + 2 - 4) // 2 + 1

    def padded_log_probs(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B, T', V log-probabilities where each clip's frames past its end make the blank certain, so a clip
        scores the same alone or in a batch."""
        log_probs = self(frames, lengths)
        valid = torch.arange(log_probs.shape[1], device=log_probs.device)[None] < self.output_length(lengths)[:, None]
        pad = torch.full_like(log_probs[0, 0], -math.inf)
        pad[0] = 0.0
        return torch.where(valid[..., None], log_probs, pad)

    def loss(self, frames: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """Summed CTC loss of a batch (a clip whose text cannot fit its frames adds nothing)."""
        return nn.functional.ctc_loss(
            self(frames, lengths).transpose(0, 1),
            torch.tensor([c for t in targets for c in t], dtype=torch.long),
            self.output_length(lengths).cpu(),
            torch.tensor([len(t) for t in targets]),
            reduction="sum",
            zero_infinity=True,
        )


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spoken_digits(text: str) -> str:
    """Each digit as its name, set apart by spaces ("b12" -> "b one  two "): how joint decoding spells digits."""
    return re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text)


def token_spellings(tokenizer) -> list[list[int] | None]:
    """Each token id's characters for the head (SPACE for any non-letter), from the token's decoded text. A digit
    is spelled as its name: a token the head cannot check would cost nothing, and joint decoding then favours it
    ("36000000..." for "three quarters"); named digits are right for digits read one by one ("erase z y g n p
    eight two three") and make the LLM write other numbers in words, which the head can check (the WER normalizer
    reads both forms alike). None for a token that is one punctuation mark three times or more (",,,,,,,,"; SmolLM2
    has 115): it costs nothing under the head either, no transcript needs it, and joint decoding never offers it."""
    table = []
    for i in range(len(tokenizer)):
        if re.fullmatch(r"\s*([^\w\s])\1{2,}\s*", tokenizer.decode([i])):
            table.append(None)
            continue
        text = spoken_digits(tokenizer.decode([i]).lower())
        text = re.sub(r"[^a-z']", " ", text)
        table.append([SPACE if c == " " else CHARS.index(c) + 1 for c in text])
    return table


def _log_linear_recurrence(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log h for h(t) = a(t) h(t-1) + b(t), h(-1) = 0, along the last axis: h(t) = sum over s <= t of b(s) times
    the product of a(s+1..t), i.e. exp(A(t)) times the cumulative sum of b(s) exp(-A(s)) with A the cumulative
    sum of log a. A falls by at most 1e4 a frame (a zero probability clamped, so no inf - inf) and float64 keeps
    the cancellation exact to about 1e-8 over 30 s of frames."""
    cum = log_a.clamp(min=-1e4).cumsum(-1)
    return cum + torch.logcumsumexp(log_b - cum, -1)


def _words_after(words: tuple[str, ...], added: list[int]) -> tuple[str, ...]:
    """The words of a text (the last one perhaps unfinished) after characters are added to it."""
    out = list(words)
    for ch in added:
        if ch == SPACE:
            out.append("")
        elif out:
            out[-1] += CHARS[ch - 1]
        else:
            out.append(CHARS[ch - 1])
    return tuple(out)


def ends_in_loop(words: tuple[str, ...], min_repeats: int = 4, max_period: int = 12) -> bool:
    """Whether the words end with a phrase of up to `max_period` words said `min_repeats` times in a row (a single
    word: one more time): the loops `tiny_audio.transcribe.cut_repetition` cuts, with its defaults."""
    n = len(words)
    for period in range(1, max_period + 1):
        repeats = min_repeats + (period == 1)
        if period * repeats > n:
            break
        unit = words[n - period :]
        if all(words[n - (k + 1) * period : n - k * period] == unit for k in range(1, repeats)):
            return True
    return False


LEXICON_NAME = "lexicon.txt"
LEXICON_NOTICE = "lexicon_notice.txt"  # where the word list came from and its licence, kept beside it


class Lexicon:
    """Known words, as the head spells them, for a soft lexicon in joint decoding.

    Most of the head-guided errors left are not words ("hastyly", "eligant", "contraversy"): where the LLM is unsure,
    the head's letters win even when they spell nothing. Joint decoding with a lexicon charges a penalty once for
    each word that leaves it: as soon as the letters so far begin no known word, or when a word ends that is only
    the beginning of one. Names not in the list pay it too, so it is a penalty, not a ban."""

    def __init__(self, words: Iterable[str], notice: str | None = None):
        # Entries with other characters ("éclair", "o'clock-ish") are left out rather than respelled.
        spelled = {w for w in (word.strip().lower() for word in words) if re.fullmatch(r"[a-z']+", w)}
        self.sorted = sorted(spelled)
        self.known = frozenset(spelled)
        self.notice = notice

    @classmethod
    def load(cls, path: str | Path, notice: str | Path | None = None) -> Lexicon:
        """A word list, one per line; `notice` (a file), or LEXICON_NOTICE beside it, says where it came from."""
        path = Path(path)
        notice = Path(notice) if notice else path.with_name(LEXICON_NOTICE)
        text = notice.read_text(encoding="utf-8") if notice.is_file() else None
        return cls(path.read_text(encoding="utf-8").splitlines(), notice=text)

    def save(self, folder: str | Path) -> None:
        """Write LEXICON_NAME (and LEXICON_NOTICE, if known) into a folder."""
        folder = Path(folder)
        (folder / LEXICON_NAME).write_text("".join(f"{w}\n" for w in self.sorted), encoding="utf-8")
        if self.notice:
            (folder / LEXICON_NOTICE).write_text(self.notice, encoding="utf-8")

    def __len__(self) -> int:
        return len(self.sorted)

    def begins(self, part: str) -> bool:
        """Whether some known word begins with `part` (every word begins with ""), quotes aside."""
        for text in dict.fromkeys((part, part.strip("'"))):
            i = bisect.bisect_left(self.sorted, text)
            if i < len(self.sorted) and self.sorted[i].startswith(text):
                return True
        return False

    def __contains__(self, word: str) -> bool:
        # Word lists leave out plural possessives ("felons'") and quoted words: the word inside the quotes counts.
        return word in self.known or word.strip("'") in self.known or not word.strip("'")

    def unknown(self, words: tuple[str, ...], start: int = 0) -> int:
        """How many of a text's words from `start` on have left the lexicon: the finished ones not in it, and the
        last, unfinished one if no known word begins with it. A token changes only the last word and those after
        it, so joint decoding counts from there and carries the rest."""
        tail = words[start:]
        return sum(w not in self for w in tail[:-1]) + (bool(tail) and not self.begins(tail[-1]))

    def unknown_at_end(self, words: tuple[str, ...], start: int = 0) -> int:
        """The same once the text has ended: its last word is finished too."""
        return sum(w not in self for w in words[start:])


class _Prefix:
    """CTC forward variables of one text prefix: r_n / r_b (T,) log-probabilities that the prefix has been emitted
    by frame t ending in its last character / in a blank; psi, the prefix log-probability; a space held back until
    a letter follows (so a text ending in punctuation ends cleanly); bare, whether its last token added no letter;
    its words so far, as the head spells them, and how many of them have left the lexicon (see Lexicon.unknown)."""

    __slots__ = ("bare", "last", "pending", "psi", "r_b", "r_n", "started", "unknown", "words")

    def __init__(self, r_n, r_b, last: int, psi: float, pending: bool, started: bool, bare: bool = False,
                 words: tuple[str, ...] = (), unknown: int = 0):  # fmt: skip
        self.r_n, self.r_b, self.last, self.psi, self.pending, self.started = r_n, r_b, last, psi, pending, started
        self.bare, self.words, self.unknown = bare, words, unknown

    def committed(self, spelling: list[int]) -> tuple[list[int], bool]:
        """The characters a token adds to this prefix, and whether a space is then held back."""
        out, pending = [], self.pending
        for ch in spelling:
            if ch == SPACE:
                pending = pending or self.started or bool(out)
            else:
                out.extend([SPACE, ch] if pending else [ch])
                pending = False
        return out, pending


class _Candidate(NamedTuple):
    """A row's candidate token, with what the prefix it makes will hold."""

    row: int
    token: int
    tokens: list[int]
    pending: bool
    started: bool
    bare: bool  # the token adds no letter
    words: tuple[str, ...]
    unknown: int


class CTCPrefixScorer(LogitsProcessor):
    """Joint CTC / LLM decoding as a logits processor, for greedy and beam search over a batch.

    Each row's candidate tokens get `weight` x (CTC prefix log-probability with the token - without); the other
    tokens are dropped (the pre-beam of joint decoding: scoring all 49k would cost 49k prefix updates). The
    candidates are the row's `top_k` tokens by LLM score, the end token, and the LLM's best `top_k // 2` among the
    tokens that begin with the character the head reads next (after a space: the letter after it). Without those,
    an LLM caught in a loop offers only loop tokens ("ha-h-h-h-h...") and the head can but pick the least bad.
    Rows are matched to the prefixes scored at the previous step by their tokens, as beam search reorders rows.
    With a `lexicon`, each word that leaves it costs `lexicon_penalty` (the LLM's log-probability scale).
    """

    def __init__(self, log_probs: torch.Tensor, spellings: list[list[int] | None], eos_token_id: int, weight: float,
                 num_beams: int = 1, top_k: int | None = None, word_gaps: bool = True,
                 lexicon: Lexicon | None = None, lexicon_penalty: float = 0.0):  # fmt: skip
        # B, T, V as CTCHead.padded_log_probs gives; float64 for the closed-form recurrence (see extend)
        self.x = log_probs.detach().double().cpu()
        self.word_gaps = word_gaps
        self.lexicon = lexicon if lexicon is not None and lexicon_penalty else None
        self.lexicon_penalty = lexicon_penalty if self.lexicon is not None else 0.0
        if not word_gaps:
            # The head hears word gaps only faintly and ran words together against the LLM ("thejealous"): without
            # them a space is one more way to say nothing (its probability joins the blank's), the head checks the
            # letters alone, and where words end is the LLM's call.
            self.x = without_word_gaps(self.x)
        self.spellings, self.eos, self.weight, self.beams = spellings, eos_token_id, weight, num_beams
        self.top_k = top_k or max(8, 2 * num_beams)
        self.prefixes: dict[tuple, _Prefix] = {}
        self.ended: dict[tuple, float] = {}  # (clip, tokens ending in the end token) -> the CTC score it was given
        # Each token's first letter (0: it has none) and whether a space comes first, for the guided candidates.
        first = [next((c for c in spelling or [] if c != SPACE), 0) for spelling in spellings]
        self.first_letter = torch.tensor(first)
        self.space_first = torch.tensor([bool(sp) and sp[0] == SPACE for sp in spellings])

    def empty(self, b: int) -> _Prefix:
        r_b = self.x[b, :, 0].cumsum(0)
        return _Prefix(torch.full_like(r_b, -math.inf), r_b, 0, 0.0, False, False)

    def full_score(self, prefix: _Prefix) -> float:
        """Log-probability that the prefix is the whole transcript."""
        return float(torch.logaddexp(prefix.r_n[-1], prefix.r_b[-1]))

    def extend(self, items: list[int], prefixes: list[_Prefix], additions: list[list[int]]) -> list[tuple]:
        """(r_n, r_b, last, psi) of each prefix extended by its characters (the CTC prefix recursion, Graves 2012 /
        Watanabe et al. 2017): vectorised over the prefixes and the frames, sequential over the characters."""
        if not self.word_gaps:
            additions = [[c for c in a if c != SPACE] for a in additions]
        r_n = torch.stack([p.r_n for p in prefixes])
        r_b = torch.stack([p.r_b for p in prefixes])
        last = torch.tensor([p.last for p in prefixes])
        psi = torch.tensor([p.psi for p in prefixes], dtype=torch.float64)
        empty = torch.tensor([not p.started for p in prefixes])
        items_t = torch.tensor(items)
        xb_all = self.x[items_t, :, 0]  # n, T: the blank's log-probability (only the columns needed are gathered)
        lengths = torch.tensor([len(a) for a in additions])
        # Candidates of one prefix often spell the same letters (" the" and "the" without word gaps) or begin
        # alike ("the", "then"): at each character, one computation per distinct (prefix, letters so far), copied
        # to the others. Rows sharing letters up to j shared them before j too, so their state is the same.
        owner = [id(p) for p in prefixes]
        for j in range(int(lengths.max()) if additions else 0):
            active = (lengths > j).nonzero().squeeze(1).tolist()
            groups: dict[tuple, int] = {}  # (prefix, letters up to j) -> its group's number
            firsts, group_of = [], []
            for i in active:
                key = (owner[i], *additions[i][: j + 1])
                if key not in groups:
                    groups[key] = len(firsts)
                    firsts.append(i)
                group_of.append(groups[key])
            rows, back = torch.tensor(firsts), torch.tensor(group_of)  # one computation per group
            c = torch.tensor([additions[i][j] for i in rows.tolist()])
            xc = self.x[items_t[rows], :, c]  # n, T: the new character's log-probability at each frame
            xb = xb_all[rows]
            # Paths may enter the new character from the prefix ending in a blank, or in its last character
            # unless the new one repeats it (CTC needs a blank between two equal characters).
            phi = torch.where((c == last[rows])[:, None], r_b[rows], torch.logaddexp(r_n[rows], r_b[rows]))
            # r_n(t) = (r_n(t-1) + phi(t-1)) x_c(t) and r_b(t) = (r_n(t-1) + r_b(t-1)) x_blank(t), in probabilities:
            # first-order linear recurrences, solved over all frames at once rather than frame by frame.
            start = torch.where(empty[rows], xc[:, 0], torch.full_like(xc[:, 0], -math.inf))
            new_n = _log_linear_recurrence(xc, torch.cat([start[:, None], phi[:, :-1] + xc[:, 1:]], 1))
            new_b = _log_linear_recurrence(
                xb, torch.cat([torch.full_like(start[:, None], -math.inf), new_n[:, :-1] + xb[:, 1:]], 1)
            )
            new_psi = torch.logsumexp(torch.cat([new_n[:, :1], phi[:, :-1] + xc[:, 1:]], 1), 1)
            rows = torch.tensor(active)  # each active row takes its group's result
            r_n[rows], r_b[rows], psi[rows] = new_n[back], new_b[back], new_psi[back]
            last[rows], empty[rows] = c[back], False
        return [(r_n[i], r_b[i], int(last[i]), float(psi[i])) for i in range(len(prefixes))]

    def _prefix(self, b: int, tokens: list[int]) -> _Prefix | None:
        """The scored prefix a row continues; None for a row that continues none: a finished row padded on (greedy)
        or the placeholder beams of a finished clip, whose tokens generation ignores. Spelling those from the
        start at every step would cost more with each step."""
        if not tokens:
            return self.empty(b)
        return self.prefixes.get((b, tuple(tokens)))

    def next_char_scores(self, items: list[int], r_n, r_b, last: list[int], empty: list[bool]) -> torch.Tensor:
        """n, C: the prefix log-probability of each prefix (forward variables r_n, r_b: n, T) extended by each
        character, all at once: psi(h + c) = sum over t of phi(t-1) x_c(t) needs no recursion."""
        x = self.x[torch.tensor(items)]  # n, T, V
        repeat = torch.tensor(last)[:, None] - 1 == torch.arange(len(CHARS))[None]  # entering c == last needs a blank
        phi = torch.where(repeat[:, None], r_b[:, :-1, None], torch.logaddexp(r_n, r_b)[:, :-1, None])  # n, T-1, C
        psi = torch.logsumexp(phi + x[:, 1:, 1:], 1)
        start = torch.where(torch.tensor(empty)[:, None], x[:, 0, 1:], torch.full_like(psi, -math.inf))
        return torch.logaddexp(psi, start)

    def guided(self, rows: list[int], prefixes: list[_Prefix], scores: torch.Tensor) -> dict[int, list[int]]:
        """For each row, the LLM's best `top_k // 2` tokens that begin with the head's most likely next character
        (with or without a space before it), or, where that is a space, with a space and the head's most likely
        letter after it."""
        items = [row // self.beams for row in rows]
        psi = self.next_char_scores(
            items,
            torch.stack([p.r_n for p in prefixes]),
            torch.stack([p.r_b for p in prefixes]),
            [p.last for p in prefixes],
            [not p.started for p in prefixes],
        )
        first = (psi.argmax(1) + 1).tolist()
        # A held-back space comes before any letter; an empty prefix drops a leading one. Without word gaps the
        # head reads letters only, and the tokens with and without a space before its letter are offered alike.
        spaced = [i for i, p in enumerate(prefixes) if p.pending or (p.started and first[i] == SPACE)]
        spaced = spaced if self.word_gaps else []
        letter = dict(enumerate(first))
        if spaced:
            ext = self.extend([items[i] for i in spaced], [prefixes[i] for i in spaced], [[SPACE]] * len(spaced))
            after = self.next_char_scores(
                [items[i] for i in spaced],
                torch.stack([e[0] for e in ext]),
                torch.stack([e[1] for e in ext]),
                [SPACE] * len(spaced),
                [False] * len(spaced),
            )
            after[:, SPACE - 1] = -math.inf  # a letter after the space
            letter.update(zip(spaced, (after.argmax(1) + 1).tolist(), strict=True))
        out = {}
        for i, row in enumerate(rows):
            mask = self.first_letter == letter[i]
            # Where the head reads a space, the tokens that begin with one. Where it reads a letter straight on,
            # tokens with and without a space before it: the head hears word gaps only faintly, and offered only
            # the unspaced ones the beam ran words together ("it wasdisposed"); the LLM knows where words end.
            if i in spaced and prefixes[i].started and not prefixes[i].pending:
                mask &= self.space_first
            mask = mask[: scores.shape[-1]]  # a tokenizer may count more tokens than the LLM's output has
            masked = scores[row, : len(mask)].float().masked_fill(~mask, -math.inf)
            top = masked.topk(min(self.top_k // 2, len(mask)))
            out[row] = top.indices[torch.isfinite(top.values)].tolist()
        return out

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = scores.float().topk(min(self.top_k, scores.shape[-1]), dim=-1).indices.tolist()
        out = torch.full_like(scores, -math.inf)
        known = {}
        for row, tokens in enumerate(input_ids.tolist()):
            prefix = self._prefix(row // self.beams, tokens)
            if prefix is None:
                out[row] = scores[row]
            else:
                known[row] = (tokens, prefix)
        extra = self.guided(list(known), [p for _, p in known.values()], scores) if known else {}
        items, prefixes, additions, meta = [], [], [], []
        for row, (tokens, prefix) in known.items():
            b = row // self.beams
            if self.lexicon is not None:
                # A token changes only the prefix's last word and adds words after it; the words before are
                # finished, so each candidate's count is this row's from the last word on, then the new one's.
                last = max(len(prefix.words) - 1, 0)
                counted = self.lexicon.unknown(prefix.words, last)
            for token in dict.fromkeys([*top[row], *extra[row], self.eos]):
                if token == self.eos:
                    full = self.full_score(prefix)
                    self.ended[(b, (*tokens, token))] = full
                    out[row, token] = scores[row, token] + self.weight * (full - prefix.psi)
                    if self.lexicon is not None:  # the last word is finished now
                        left = self.lexicon.unknown_at_end(prefix.words, last) - counted
                        out[row, token] -= self.lexicon_penalty * left
                    continue
                spelling = self.spellings[token] if token < len(self.spellings) else []
                if spelling is None:  # a run of one punctuation mark (see token_spellings)
                    continue
                added, pending = prefix.committed(spelling)
                if not added and prefix.bare:
                    # A token with no letter leaves the CTC score as it is, so a run of them would cost nothing:
                    # punctuation loops (",,,,") were the result. One at a time.
                    continue
                words = _words_after(prefix.words, added) if added else prefix.words
                if added and ends_in_loop(words):
                    # Each copy of a short unit can find its letters somewhere later in the audio at a small cost,
                    # so the head alone does not stop a loop ("by-n-n-n-n..." for "buy new china", which then
                    # lost the rest of the clip when cut afterwards): the token that would make it one is refused.
                    continue
                unknown = prefix.unknown
                if self.lexicon is not None and added:
                    unknown += self.lexicon.unknown(words, last) - counted
                items.append(b)
                prefixes.append(prefix)
                additions.append(added)
                meta.append(
                    _Candidate(row, token, tokens, pending, prefix.started or bool(added), not added, words, unknown)
                )
        scored = {}
        if prefixes:
            extended = self.extend(items, prefixes, additions)
            for m, (r_n, r_b, last, psi), prefix in zip(meta, extended, prefixes, strict=True):
                gain = self.weight * (psi - prefix.psi) - self.lexicon_penalty * (m.unknown - prefix.unknown)
                out[m.row, m.token] = scores[m.row, m.token] + gain
                scored[(m.row // self.beams, (*m.tokens, m.token))] = _Prefix(
                    r_n, r_b, last, psi, m.pending, m.started, m.bare, m.words, m.unknown
                )
        self.prefixes = scored
        # A row left with no choice (its top tokens all dropped, or the audio spells none of them) ends.
        stuck = ~torch.isfinite(out).any(-1)
        out[stuck, self.eos] = scores[stuck, self.eos]
        for row in stuck.nonzero()[:, 0].tolist():
            if row in known:  # it ends with no CTC score added for the end: its score is its prefix's
                tokens, prefix = known[row]
                self.ended[(row // self.beams, (*tokens, self.eos))] = prefix.psi
        return out

    def scores_of(self, sequences: torch.Tensor) -> torch.Tensor:
        """The CTC log-probability joint decoding gave each row of generate()'s output (new tokens only, `num_beams`
        rows a clip): that it is the whole transcript, up to its end token; for a row that ran to the token limit,
        that the audio begins with it. Its part in the beam's score is `weight` times this."""
        out = []
        for row, tokens in enumerate(sequences.tolist()):
            b = row // self.beams
            if self.eos in tokens:
                out.append(self.ended[(b, tuple(tokens[: tokens.index(self.eos) + 1]))])
            else:
                out.append(self.prefixes[(b, tuple(tokens))].psi)
        return torch.tensor(out, dtype=torch.float64)
