"""ASRModel behaviour across encoder families x decoder families, on tiny random backbones."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import LogitsProcessor, LogitsProcessorList

from tiny_audio import ASRConfig, ASRModel
from tiny_audio.model import _unadapted_copy
from tiny_audio.testing import DECODERS, ENCODERS, tiny_decoder_config, tiny_encoder_config

PAIRS = [(e, d) for e in ENCODERS for d in DECODERS]


@pytest.mark.parametrize(("encoder", "decoder"), PAIRS)
def test_forward_shapes_loss_and_gradients(make_model, clips, encoder, decoder):
    model = make_model(encoder, decoder).train()
    batch = model.processor(clips, text=["hello world", "one two three", "yes"], padding_side="right")
    out = model(**batch)
    vocab = model.get_input_embeddings().num_embeddings
    # With labels the head runs only at the positions that predict a transcript token (the loss's positions).
    predicting = (batch["labels"][:, 1:] != -100).any(0).nonzero().squeeze(-1)
    assert out.logits.shape == (len(batch["input_ids"]), len(predicting), vocab)
    assert torch.isfinite(out.loss)
    without_labels = {k: v for k, v in batch.items() if k != "labels"}
    assert model(**without_labels).logits.shape == (*batch["input_ids"].shape, vocab)
    out.loss.backward()
    # Gradients only where training: projector and LoRA; frozen backbone weights get none.
    for name, param in model.named_parameters():
        trains = name.startswith("projector.") or "lora_" in name
        assert param.requires_grad == trains, name
        if name.startswith("projector.") or "lora_B" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        if not trains:
            assert param.grad is None, name


@pytest.mark.parametrize("num_items", [None, 7])
def test_loss_equals_the_full_logits_loss(make_model, clips, num_items):
    """The head on transcript positions only is a shortcut: the loss (mean over transcript tokens, or the sum over
    the Trainer's `num_items_in_batch`) matches the one computed from every position's logits."""
    model = make_model()
    batch = model.processor(clips, text=["hello world", "one two three", "yes"], padding_side="right")
    labels = batch["labels"]
    with torch.no_grad():
        full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
        loss = model(**batch, **extra).loss
    per_token = torch.nn.functional.cross_entropy(
        full[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
    )
    expected = per_token / (num_items or (labels[:, 1:] != -100).sum())
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_loss_only_on_transcript_tokens(make_model, clips):
    model = make_model()
    batch = model.processor(clips[:1], text=["hello world"], padding_side="right")
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    target = model.processor.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    kept = labels[labels != -100].tolist()
    assert kept == target + [model.processor.eos_token_id]
    assert (labels[ids == model.config.audio_token_id] == -100).all()


@pytest.mark.parametrize(("encoder", "decoder"), PAIRS)
def test_batched_generation_equals_single(make_model, clips, encoder, decoder):
    model = make_model(encoder, decoder)
    proc = model.processor
    batched = proc.batch_decode(model.generate(**proc(clips), max_new_tokens=6))
    single = [proc.decode(model.generate(**proc([c]), max_new_tokens=6)[0]) for c in clips]
    assert batched == single


def test_padded_frames_never_reach_the_llm(make_model, clips):
    model = make_model("hubert", "llama")
    proc = model.processor
    alone = model.encode_audio(**_audio(proc([clips[2]])))
    in_batch = model.encode_audio(**_audio(proc(clips)))
    n0, n1 = (proc.num_audio_tokens(len(c)) for c in clips[:2])
    # The short clip's frames come last in the flattened batch; same values, same count as alone.
    torch.testing.assert_close(in_batch[n0 + n1 :], alone, atol=1e-5, rtol=1e-4)


def _audio(batch):
    return {"input_features": batch["input_features"], "audio_attention_mask": batch["audio_attention_mask"]}


def test_placeholder_count_mismatch_is_a_clear_error(make_model, clips):
    model = make_model()
    batch = model.processor(clips[:1])
    ids = batch["input_ids"]
    drop = (ids[0] == model.config.audio_token_id).nonzero()[0, 0]
    batch["input_ids"] = torch.cat([ids[:, :drop], ids[:, drop + 1 :]], dim=1)
    batch["attention_mask"] = batch["attention_mask"][:, 1:]
    with pytest.raises(ValueError, match="placeholder tokens per clip"):
        model(**batch)


def test_backbone_weights_are_the_pretrained_ones(make_model, backbones):
    model = make_model("wavlm", "qwen3")
    _, text_dir = backbones("wavlm", "qwen3")
    saved = load_file(f"{text_dir}/model.safetensors")
    live = model.language_model.get_base_model().state_dict()
    key = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(live[key], saved[key], atol=0, rtol=0)


@pytest.mark.parametrize(("encoder", "decoder"), PAIRS)
def test_save_load_roundtrip_gives_identical_logits(make_model, clips, tmp_path, encoder, decoder):
    model = make_model(encoder, decoder)
    with torch.no_grad():  # make LoRA non-trivial (lora_B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    batch = model.processor(clips, text=["a", "b", "c"], padding_side="right")
    model.save_pretrained(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(k.startswith("projector.") or "lora_" in k for k in saved), "only trained weights are saved"
    loaded = ASRModel.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_lora_rank_zero_means_no_adapter(make_model):
    model = make_model(encoder_lora_rank=0, decoder_lora_rank=0)
    report = model.parameter_report()
    assert report["total"]["lora"] == 0
    assert report["total"]["trainable"] == report["projector"]["total"]


def test_parameter_report_counts_lora_per_side(make_model):
    report = make_model(encoder_lora_rank=4, decoder_lora_rank=2).parameter_report()
    # tiny encoder: 2 layers, width 32, LoRA on q,k: 2 * 2 * r * (32 + 32)
    assert report["audio_tower"]["lora"] == 2 * 2 * 4 * 64
    # tiny decoder: q 32->32 and v 32->16 (1 kv head of 16): 2 * r * ((32+32) + (32+16))
    assert report["language_model"]["lora"] == 2 * 2 * (64 + 48)


def test_self_contained_merged_export_runs_without_backbones(make_model, backbones, clips, tmp_path):
    import shutil

    model = make_model("whisper", "llama")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    batch = model.processor(clips, text=["a", "b", "c"], padding_side="right")
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "full", include_base_weights=True, merge_lora=True)
    # Move the backbone folders away: the export must not need them.
    audio_dir, text_dir = backbones("whisper", "llama")
    for d in (audio_dir, text_dir):
        shutil.move(d, d + ".away")
    try:
        loaded = ASRModel.from_pretrained(tmp_path / "full")
    finally:
        for d in (audio_dir, text_dir):
            shutil.move(d + ".away", d)
    assert loaded.parameter_report()["total"]["lora"] == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, expected, atol=1e-4, rtol=1e-4)


def test_a_few_steps_lower_the_loss(make_model, clips):
    model = make_model().train()
    batch = model.processor(clips, text=["hello world", "one two three", "yes"], padding_side="right")
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())
    # A frozen random 2-layer LM limits how far it can go; the point is a steady descent.
    assert losses[-1] < losses[0] * 0.95 and losses[-1] == min(losses), losses


def test_wavlm_lora_defaults_to_layers_it_can_adapt(make_model):
    model = make_model("wavlm", "qwen3")
    assert model.config.encoder_lora_target_modules == ["feed_forward.intermediate_dense", "feed_forward.output_dense"]
    with pytest.raises(ValueError, match="no effect in a wavlm encoder"):
        make_model("wavlm", "qwen3", encoder_lora_target_modules=["q_proj", "k_proj"])


def test_generation_options_pass_through(make_model, clips, monkeypatch):
    model = make_model()
    batch = model.processor(clips[:2])
    greedy = model.generate(**batch, max_new_tokens=4)
    assert greedy.shape[1] <= 4
    beams = model.generate(**batch, max_new_tokens=4, num_beams=3)
    assert beams.shape[0] == 2
    # The prompt's KV cache is computed once per clip and shared by its beams: the same search as one per beam.
    with monkeypatch.context() as patch:
        patch.setattr(model, "_shared_prefill", lambda *args: None)
        assert torch.equal(model.generate(**batch, max_new_tokens=4, num_beams=3), beams)
    penalised = model.generate(**batch, max_new_tokens=6, repetition_penalty=5.0, no_repeat_ngram_size=1)
    for row in penalised.tolist():
        row = [t for t in row if t != model.processor.tokenizer.pad_token_id]
        assert len(row) == len(set(row)), "no_repeat_ngram_size=1 forbids any repeated token"
    torch.manual_seed(0)
    sampled = model.generate(**batch, max_new_tokens=6, do_sample=True, temperature=5.0)
    assert not torch.equal(sampled[:, : greedy.shape[1]], greedy) or sampled.shape != greedy.shape


def test_output_length_is_capped_by_the_audio_length(make_model, clips):
    model = make_model()
    batch = model.processor(clips[:2])  # the longest is 1.7 s
    forced = {"min_new_tokens": 200, "max_new_tokens": 200}  # no end of text before the cap
    tokens = model.generate(**batch, **forced)
    assert tokens.shape[1] == 17 + 8  # 10 tokens a second of the longest clip, + 8
    # ...and each row stops at its own limit (1.0 s: 18 tokens), the same as when the clip runs alone.
    pad = model.processor.tokenizer.pad_token_id
    assert (tokens[0] != pad).sum() == 18 and (tokens[1] != pad).sum() == 25
    alone = model.generate(**model.processor(clips[:1]), **forced)
    assert torch.equal(alone[0], tokens[0, :18])
    assert model.generate(**batch, **forced, max_new_tokens_per_second=None).shape[1] == 200


def test_built_from_nested_configs_alone_with_random_weights():
    config = ASRConfig(
        audio_config=tiny_encoder_config("hubert").to_dict(),
        text_config=tiny_decoder_config("qwen3", 401).to_dict(),
        projector_hidden_dim=64,
    )
    model = ASRModel(config)
    report = model.parameter_report()
    assert report["projector"]["total"] == 2 * 160 * 64 + 64 * 32 + 160 + 32
    assert report["audio_tower"]["lora"] > 0 and report["language_model"]["lora"] > 0


def test_an_encoder_from_its_config_alone_never_looks_up_a_feature_extractor(backbones, monkeypatch):
    """Random-weight encoders (benchmarks) beside a real LLM: the processor must not ask the Hub for "None"."""
    import transformers

    from tiny_audio.processor import ASRProcessor

    def no_lookup(*args, **kwargs):
        raise AssertionError(f"looked up a feature extractor: {args}")

    monkeypatch.setattr(transformers.AutoFeatureExtractor, "from_pretrained", no_lookup)
    _, text_dir = backbones("hubert", "qwen3")
    config = ASRConfig(audio_config=tiny_encoder_config("hubert").to_dict(), text_model_id=text_dir)
    processor = ASRProcessor.from_config(config)
    assert type(processor.feature_extractor).__name__ == "Wav2Vec2FeatureExtractor"


def test_a_frozen_audio_tower_stays_deterministic_in_training_mode(make_model, clips):
    model = make_model("hubert", "qwen3", encoder_lora_rank=0)
    model.config.audio_config.mask_time_prob = 0.5  # HuBERT's own SpecAugment, active in train mode
    model.audio_tower.config.hidden_dropout = 0.5
    batch = model.processor(clips, text=["a", "b", "c"], padding_side="right")
    model.train()
    assert not model.audio_tower.training and model.projector.training
    with torch.no_grad():
        first, second = model.encode_audio(**_audio(batch)), model.encode_audio(**_audio(batch))
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    trained = make_model("hubert", "qwen3", encoder_lora_rank=2).train()
    assert trained.audio_tower.training, "a tower with trainable LoRA trains normally"


def test_gradient_checkpointing_gives_the_same_gradients(make_model, clips):
    grads = []
    for checkpointing in (False, True):
        model = make_model("whisper", "llama").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert any(getattr(m, "gradient_checkpointing", False) for m in model.language_model.modules())
        batch = model.processor(clips, text=["a b", "c", "d e f"], padding_side="right")
        model(**batch).loss.backward()
        grads.append(model.projector.down_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_int8_dynamic_quantization_keeps_the_text_close(make_model, clips):
    """The int8 option: LoRA folded in, every Linear quantized; greedy tokens stay close to float32's. Folding
    LoRA alone (float32) changes nothing."""
    model = make_model(decoder_lora_rank=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = model.processor(clips)
    plain = model.generate(**batch, max_new_tokens=8)
    folded = copy.deepcopy(model).for_inference()
    assert not any("lora_" in n for n, _ in folded.named_parameters())
    assert torch.equal(folded.generate(**batch, max_new_tokens=8), plain)
    quantized = model.for_inference("int8").generate(**batch, max_new_tokens=8)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in model.modules())
    assert quantized.shape == plain.shape
    # Tolerance: with random weights the logits are nearly flat, so int8 rounding may flip a few tokens.
    assert (quantized == plain).float().mean() >= 0.5


def test_bfloat16_weights_keep_the_text_close(make_model, clips):
    """The GPU path's dtype and the CPU's `bfloat16` precision: bf16 backbones and projector give greedy tokens
    close to float32's."""
    model = make_model()
    batch = model.processor(clips)
    options = {"max_new_tokens": 8, "min_new_tokens": 8}
    plain = model.generate(**batch, **options)
    half = model.for_inference("bfloat16").generate(**batch, **options)
    assert next(model.language_model.parameters()).dtype == torch.bfloat16
    # Tolerance as for int8: random weights give nearly flat logits, where bf16 rounding may flip a few tokens.
    assert half.shape == plain.shape and (half == plain).float().mean() >= 0.5
    with pytest.raises(ValueError, match="precision must be one of"):
        model.for_inference("float16")


def test_kv_cache_and_static_cache_give_the_plain_path_s_tokens(make_model, clips):
    """Fast paths, exact tolerance: greedy tokens with the dynamic KV cache (default) and with a static cache
    equal those of recomputing the whole sequence at every step."""
    model = make_model()
    batch = model.processor(clips)
    options = {"max_new_tokens": 6, "min_new_tokens": 6}
    plain = model.generate(**batch, **options, use_cache=False)
    assert torch.equal(model.generate(**batch, **options), plain)
    assert torch.equal(model.generate(**batch, **options, cache_implementation="static"), plain)


def test_sdpa_attention_gives_eager_attention_s_tokens(make_model, clips):
    """SDPA (the default) against the reference eager attention, in both backbones: the same greedy tokens."""
    model = make_model()
    batch = model.processor(clips)
    options = {"max_new_tokens": 6, "min_new_tokens": 6}
    assert model.language_model.config._attn_implementation == "sdpa"
    fast = model.generate(**batch, **options)
    model.language_model.set_attn_implementation("eager")
    model.audio_tower.set_attn_implementation("eager")
    assert torch.equal(model.generate(**batch, **options), fast)


def test_audio_embeddings_start_at_the_llm_embedding_scale(make_model, clips):
    model = make_model()
    table = model.get_input_embeddings().weight
    expected = table.pow(2).mean(-1).sqrt().mean()
    with torch.no_grad():
        frames = model.projector(torch.randn(2, 50, model.config.audio_config.hidden_size))
    assert torch.allclose(frames.pow(2).mean(-1).sqrt().mean(), expected, rtol=1e-3)


def test_lm_head_gets_a_contiguous_input_in_generation(make_model, clips):
    """Generation's first step hands the LM head a strided slice (the last position of each row); torch's matmul
    would then copy the frozen head weight once per row (0.7 s per batch on a CPU for SmolLM2). The model makes
    the input contiguous, also after int8 quantization swaps the head module."""
    for precision in ("float32", "int8"):
        model = make_model().for_inference(precision)
        seen: list[bool] = []
        head = model.language_model.get_output_embeddings()
        head.register_forward_hook(lambda module, args, out, seen=seen: seen.append(args[0].is_contiguous()))
        model.generate(**model.processor(clips), max_new_tokens=3)
        assert seen and all(seen), (precision, seen)


def test_internal_lm_subtraction_scores_audio_minus_weighted_text_prior(make_model, clips):
    model = make_model()
    batch = model.processor(clips[:1])
    weight, steps = 3.0, 5
    tokens = model.generate(**batch, max_new_tokens=steps, ilm_weight=weight)[0].tolist()
    assert tokens != model.generate(**batch, max_new_tokens=steps)[0].tolist(), "a weight of 3 changes the choice"
    # The same choice made the slow way: a full forward per step, with and without the audio positions.
    audio_id, eos = model.config.audio_token_id, model.processor.eos_token_id
    prompt = batch["input_ids"]
    context = prompt[:, prompt[0] != audio_id]
    expected: list[int] = []
    while len(expected) < steps and (not expected or expected[-1] != eos):
        so_far = torch.tensor([expected], dtype=prompt.dtype)
        ids = torch.cat([prompt, so_far], 1)
        inputs = {**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.no_grad():
            heard = model(**inputs).logits[0, -1].log_softmax(-1)
            prior = model.language_model(input_ids=torch.cat([context, so_far], 1)).logits[0, -1].log_softmax(-1)
        scores = heard - weight * prior
        if audio_id < len(scores):
            scores[audio_id] = -float("inf")
        expected.append(int(scores.argmax()))
    assert tokens == expected


def test_internal_lm_cache_follows_beam_reordering(make_model):
    from tiny_audio.model import _InternalLMSubtraction

    model = make_model()
    context = torch.tensor([[3, 14, 15, 9, 2]])
    steps = [
        torch.zeros(3, 0, dtype=torch.long),
        torch.tensor([[5], [7], [9]]),
        torch.tensor([[7, 1], [5, 2], [7, 3]]),  # beams reordered, one dropped, one duplicated
        torch.tensor([[5, 2, 4], [7, 1, 4], [7, 3, 8]]),
        torch.tensor([[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]]),  # not a continuation: starts over
    ]
    vocab = model.get_input_embeddings().num_embeddings
    cached = _InternalLMSubtraction(model.language_model, context, 1.0)
    for ids in steps:
        fresh = _InternalLMSubtraction(model.language_model, context, 1.0)(ids, torch.zeros(3, vocab))
        torch.testing.assert_close(cached(ids, torch.zeros(3, vocab)), fresh, atol=1e-5, rtol=1e-5)


def test_rescoring_reads_the_llm_without_lora_before_and_after_folding(make_model, clips):
    """`text_log_probs` scores with the decoder's LLM as it was before LoRA: with the adapters switched off, and,
    once `for_inference` folds them in, with a copy that shares every tensor but the adapted layers' weights."""
    model = make_model(decoder_lora_rank=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    texts = ["the cat sat", "a dog ran off", ""]
    # Unfolded, the prior is a view that shares every tensor, and the adapters stay on for any other thread.
    view = _unadapted_copy(model.language_model, folded=False)
    assert {p.data_ptr() for p in view.parameters()} <= {p.data_ptr() for p in model.language_model.parameters()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(model.language_model), "disable_adapter", None)
        before = model.text_log_probs(texts)
    assert before[2] == 0.0 and all(x < 0 for x in before[:2])
    folded = copy.deepcopy(model).for_inference()
    torch.testing.assert_close(folded.text_log_probs(texts), before)
    [adapted] = folded._unadapted
    folded._unadapted.clear()  # the folded LLM itself, LoRA on: another prior
    folded_lora_prior = folded.text_log_probs(texts[:2])
    assert not torch.allclose(torch.tensor(folded_lora_prior), torch.tensor(before[:2]))
    folded._unadapted.append(adapted)

    def copied() -> set[str]:
        own = {p.data_ptr() for p in folded.language_model.parameters()}
        return {n for n, p in adapted.named_parameters() if p.data_ptr() not in own}

    names = copied()
    assert names and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in names), names
    # to() reaches the copy, which is no submodule (so never saved), and the shared tensors stay shared.
    folded.to(torch.bfloat16)
    assert {p.dtype for p in adapted.parameters()} == {torch.bfloat16}
    assert copied() == names
    assert {key.split(".")[0] for key in folded.state_dict()} == {"audio_tower", "projector", "language_model"}
    # int8: the copy is quantized too, and still scores as the LLM without LoRA, not as the adapted one.
    quantized = copy.deepcopy(model).for_inference("int8")
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized._unadapted[0].modules())
    lora_on = torch.tensor(folded_lora_prior)
    plain = torch.tensor(quantized.text_log_probs(texts[:2]))
    assert (plain - torch.tensor(before[:2])).abs().max() < (lora_on - torch.tensor(before[:2])).abs().max()


def test_rescoring_picks_each_clip_s_hypothesis_by_beam_score_plus_weighted_prior(make_model, clips, monkeypatch):
    model = make_model()
    batch = model.processor(clips[:2])
    options = {"num_beams": 3, "max_new_tokens": 6}
    every = {"num_return_sequences": 3, "output_scores": True, "return_dict_in_generate": True}
    result = model.generate(**batch, **options, **every)
    hypotheses = model.processor.batch_decode(result.sequences)
    # A prior that favours each clip's last-ranked text, so that a large weight must overturn the beam's order.
    favoured = {hypotheses[3 * clip + 2] for clip in range(2)}
    monkeypatch.setattr(model, "text_log_probs", lambda texts: [0.0 if t in favoured else -5.0 for t in texts])
    prior = model.text_log_probs(hypotheses)
    lengths = _scored_lengths(result.sequences, model.processor.eos_token_id)
    for weight in (0.01, 50.0):
        total = result.sequences_scores * lengths + weight * torch.tensor(prior)
        expected = [result.sequences[3 * clip + int(total[3 * clip : 3 * clip + 3].argmax())] for clip in range(2)]
        picked = model.generate(**batch, **options, lm_rescore_weight=weight)
        assert len(picked) == 2
        for row, want in zip(picked, expected, strict=True):
            assert torch.equal(row, want)
    assert model.processor.batch_decode(picked) == [hypotheses[2], hypotheses[5]], hypotheses
    assert model.processor.batch_decode(picked) != [hypotheses[0], hypotheses[3]], "the weight overturned the beam"
    # Greedy search has one hypothesis: nothing to rescore.
    assert torch.equal(
        model.generate(**batch, max_new_tokens=6, lm_rescore_weight=1.0), model.generate(**batch, max_new_tokens=6)
    )


def _scored_lengths(sequences: torch.Tensor, eos: int) -> torch.Tensor:
    """The tokens generate() scored in each returned row, by which it divides the sum (length_penalty 1): up to the
    first end token, or all of them where the row ran to the token limit (it pads with whatever pad token it has)."""
    ends = (sequences == eos).any(-1)
    return torch.where(ends, (sequences == eos).int().argmax(-1) + 1, sequences.shape[1])


class _EndEarly(LogitsProcessor):
    """Makes the end token likely after a row's second token, so that some hypotheses end and some run on."""

    def __init__(self, eos: int):
        self.eos = eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] >= 2:
            scores[:, self.eos] += 20.0 * (input_ids[:, -1] % 2 == 0)
        return scores


@pytest.mark.parametrize("joint", [False, True], ids=["llm", "llm+ctc"])
def test_rescoring_sums_each_hypothesis_as_beam_search_does_without_output_scores(make_model, clips, monkeypatch,
                                                                                   joint):  # fmt: skip
    """Rescoring reads each hypothesis's summed score from HypothesisScores, not from generate()'s output_scores
    (which keeps every step's scores: GBs on a long file). The sums equal what generate() returns with them, for
    hypotheses that end and for those that reach the token limit, also behind the CTC scorer."""
    from tiny_audio.ctc import CTCHead

    model = make_model()
    options = {"num_beams": 4, "max_new_tokens": 5}
    eos = model.processor.eos_token_id
    options["logits_processor"] = LogitsProcessorList([_EndEarly(eos)])
    if joint:
        model.ctc_head = CTCHead(model.config.audio_config.hidden_size, 16).eval()
        options["ctc_head_weight"] = 0.5
    batch = model.processor(clips)
    full = model.generate(**batch, **options, num_return_sequences=4, output_scores=True, return_dict_in_generate=True)
    seen = {}

    def capture(sequences, sums, beams, weight):
        seen.update(sequences=sequences, sums=sums)
        return sequences[::beams]

    monkeypatch.setattr(model, "_rescored", capture)
    model.generate(**batch, **options, lm_rescore_weight=0.1)
    assert torch.equal(seen["sequences"], full.sequences)
    ends = (full.sequences == eos).any(-1)
    assert ends.any() and not ends.all(), "both kinds of hypothesis are checked"
    lengths = _scored_lengths(full.sequences, eos)
    torch.testing.assert_close(seen["sums"] / lengths, full.sequences_scores.double(), rtol=0, atol=1e-6)


def test_ctc_rescoring_reweights_the_head_s_score_of_each_finished_hypothesis(make_model, clips, monkeypatch):
    """`ctc_rescore_weight` ranks the finished hypotheses with the CTC head at another weight than the search's:
    each one's total moves by the difference times the CTC log-probability that it is the whole transcript."""
    from tiny_audio.ctc import SPACE, CTCHead, CTCPrefixScorer

    model = make_model()
    model.ctc_head = CTCHead(model.config.audio_config.hidden_size, 16).eval()
    eos = model.processor.eos_token_id
    options = {"num_beams": 4, "max_new_tokens": 5, "ctc_head_weight": 0.5, "ctc_word_gaps": False}
    options["logits_processor"] = LogitsProcessorList([_EndEarly(eos)])
    batch = model.processor(clips)
    full = model.generate(**batch, **options, num_return_sequences=4, output_scores=True, return_dict_in_generate=True)
    seen = {}
    scores_of = CTCPrefixScorer.scores_of

    def spy(scorer, sequences):
        seen.update(scorer=scorer, ctc=scores_of(scorer, sequences))
        return seen["ctc"]

    monkeypatch.setattr(CTCPrefixScorer, "scores_of", spy)
    picked = model.generate(**batch, **options, ctc_rescore_weight=1.5)
    ctc, x = seen["ctc"], seen["scorer"].x
    lengths = _scored_lengths(full.sequences, eos)
    totals = full.sequences_scores.double() * lengths + (1.5 - 0.5) * ctc
    want = full.sequences[totals.view(3, 4).argmax(-1) + torch.arange(3) * 4]
    assert torch.equal(picked, want)
    assert not torch.equal(picked, full.sequences[::4]), "the new weight overturned the beam's order"
    # Each finished hypothesis's CTC score is the head's probability of its letters over the clip's frames.
    spellings = seen["scorer"].spellings
    checked = 0
    for row, tokens in enumerate(full.sequences.tolist()):
        if eos not in tokens:
            assert torch.isfinite(ctc[row])
            continue
        letters = [c for t in tokens[: tokens.index(eos)] for c in spellings[t] if c != SPACE]
        frames = x.shape[1]  # past a clip's end its frames are certain blanks (CTCHead.padded_log_probs)
        expected = -torch.nn.functional.ctc_loss(
            x[row // 4, :, None], torch.tensor([letters]), [frames], [len(letters)], reduction="sum"
        )
        torch.testing.assert_close(ctc[row], expected.double(), rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked


def test_beam_distinct_ends_the_worse_of_two_rows_with_the_same_words():
    """beam_distinct: of a clip's live hypotheses with the same words so far (case, punctuation and tokenization
    aside), only the best scored goes on; the others' next tokens all become impossible."""
    from tiny_audio.model import HypothesisScores

    words = {(): "", (1,): "look", (2,): "look", (3,): "looked"}  # tokens 1 and 2: "Look" and "look,"
    scores = HypothesisScores(beams=3, eos_token_id=0, distinct=lambda tokens: words[tuple(tokens)])
    first = torch.full((3, 5), -9.0)
    first[:, 1], first[:, 2], first[:, 3] = -1.0, -2.0, -3.0
    out = scores(torch.zeros((3, 0), dtype=torch.long), first.clone())
    assert torch.isinf(out[1:]).all() and torch.equal(out[0], first[0])  # three copies of the empty start: one
    step = torch.randn(3, 5)
    out = scores(torch.tensor([[2], [1], [3]]), step.clone())
    assert torch.isinf(out[0]).all(), '"look," (sum -2) ends: "look" (sum -1) has the same words'
    assert torch.equal(out[1:], step[1:])


def test_beam_distinct_searches_with_the_same_interface(make_model, clips):
    """With beam_distinct the beam returns one transcript a clip, and all of its hypotheses with their sums."""
    model = make_model()
    batch = model.processor(clips)
    options = {"num_beams": 4, "max_new_tokens": 6, "beam_distinct": True}
    assert model.generate(**batch, **options).shape[0] == len(clips)
    found = model.generate(**batch, **options, return_hypotheses=True)
    assert found.sequences.shape[0] == 4 * len(clips) and torch.isfinite(found.sums).all()
