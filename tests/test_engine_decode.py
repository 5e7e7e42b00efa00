"""The transformers engine's sampling loop (`mel.engines.decode`) against ``model.generate`` and the model itself."""
from __future__ import annotations

import pytest
import torch

from mel.engines.decode import _draw, decode
from mel.engines.hf import TransformersEngine

PROMPTS = ["Write a function that adds two numbers.", "Hi", "Name a colour that starts with b, please, in one word."]


@pytest.fixture(scope="module")
def setup(tiny_model):
    model, tok = tiny_model
    engine = TransformersEngine("", model=model, tokenizer=tok)
    ids = [engine.encode_prompt(p) for p in PROMPTS]
    stop = {tok.eos_token_id}
    return model, tok, ids, stop


def _reference_greedy(model, prompt, stop, pad, max_tokens):
    out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=max_tokens, eos_token_id=sorted(stop), pad_token_id=pad)
    row = out[0, len(prompt):].tolist()
    return row[:next((i + 1 for i, t in enumerate(row) if t in stop), len(row))]


def test_greedy_rows_of_a_left_padded_batch_equal_generate_one_prompt_at_a_time(setup):
    model, tok, ids, stop = setup
    assert len({len(p) for p in ids}) == len(ids), "the prompts must differ in length, so the batch is padded"
    got = decode(model, ids, temperature=0.0, max_tokens=24, seed=0, stop_ids=stop, pad_id=tok.pad_token_id)
    for prompt, d in zip(ids, got):
        assert d.token_ids == _reference_greedy(model, prompt, stop, tok.pad_token_id, 24)


def _teacher_forced(model, prompt, completion, temperature):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1].float()  # [T, V]
    lp = torch.log_softmax(logits / temperature, -1)
    return lp.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)  # [T]


def test_reported_logprobs_are_the_models_own_also_after_rows_share_a_prefill_and_finished_rows_leave(setup):
    """Groups of 4 rows per prompt share a prefill; a stop set of 1 token in 25 ends rows at scattered steps, so the
    batch shrinks many times. Every row's log-probs still equal a teacher-forced pass over prompt + completion: a row
    reading another row's cache, or a wrong position, would not."""
    model, tok, ids, _ = setup
    stop = {t for t in range(len(tok)) if t % 25 == 3}
    got = decode(model, [p for p in ids for _ in range(4)], temperature=0.7, max_tokens=30, seed=0, stop_ids=stop,
                 pad_id=tok.pad_token_id)
    lengths = sorted(len(d.token_ids) for d in got)
    assert lengths[0] < 10 and lengths[-1] == 30 and len(set(lengths)) > 4, lengths
    for i, d in enumerate(got):
        want = _teacher_forced(model, ids[i // 4], d.token_ids, 0.7)
        assert torch.allclose(torch.tensor(d.logprobs), want, atol=1e-4), (i, d.logprobs, want.tolist())
        assert d.stopped == (d.token_ids[-1] in stop)


def test_sampling_is_reproducible_per_seed_and_a_tiny_top_p_is_greedy(setup):
    model, tok, ids, stop = setup
    flat = [p for p in ids for _ in range(4)]
    kw = dict(max_tokens=16, stop_ids=stop, pad_id=tok.pad_token_id)
    a = decode(model, flat, temperature=1.0, seed=5, **kw)
    b = decode(model, flat, temperature=1.0, seed=5, **kw)
    c = decode(model, flat, temperature=1.0, seed=6, **kw)
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert [d.token_ids for d in a] != [d.token_ids for d in c]
    assert len({tuple(d.token_ids) for d in a}) > len(ids), "samples of one prompt should differ at T=1"
    nucleus = decode(model, flat, temperature=1.0, seed=5, top_p=1e-9, **kw)
    greedy = decode(model, flat, temperature=0.0, seed=5, **kw)
    assert [d.token_ids for d in nucleus] == [d.token_ids for d in greedy]


def test_the_one_number_draw_follows_each_rows_probabilities_and_never_draws_a_zero():
    """`_draw` (inverse CDF, one uniform number per row) on 40,000 copies of two rows, one of them not normalised
    (top-p leaves rows that sum to less than 1): each token's share is its probability within 4 standard errors, and
    tokens of probability 0 (first, inside, last) never come up."""
    rows = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0], [0.2, 0.0, 0.05, 0.0, 0.0, 0.15]])
    n = 40_000
    drawn = _draw(rows.repeat(n, 1), torch.Generator().manual_seed(0)).view(n, 2)
    for r in range(2):
        p = rows[r] / rows[r].sum()
        share = torch.bincount(drawn[:, r], minlength=6).float() / n
        assert torch.all(share[p == 0] == 0), (r, share)
        bound = 4 * torch.sqrt(p * (1 - p) / n)
        assert torch.all((share - p).abs() <= bound), (r, share, p)
    again = _draw(rows.repeat(n, 1), torch.Generator().manual_seed(0)).view(n, 2)
    assert torch.equal(drawn, again)


def test_a_row_that_hits_the_budget_is_cut_there_and_one_that_stops_ends_on_its_stop_token(setup):
    model, tok, ids, stop = setup
    got = decode(model, ids, temperature=1.0, max_tokens=40, seed=1, stop_ids=stop, pad_id=tok.pad_token_id)
    for d in got:
        assert len(d.token_ids) == len(d.logprobs) <= 40
        if d.stopped:
            assert d.token_ids[-1] in stop and not any(t in stop for t in d.token_ids[:-1])
        else:
            assert len(d.token_ids) == 40 and not any(t in stop for t in d.token_ids)
