"""The transformers engine's sampling loop: a KV-cached decode over a batch of left-padded prompts that does less work
than ``model.generate`` for RL rollouts (measured side by side by ``benchmarks/engine_speed.py``):

- **a group's prompt is prefilled once**: the rows of a batch that share a prompt (the ``n`` samples of a group are
  contiguous) share one prefill, whose cache is then copied to each of them (``DynamicCache.batch_select_indices``);
- **finished rows leave the batch**: once a row has sampled an end token (and no logits processor watches the rows),
  its cache is dropped, so the rest decode in a smaller batch;
- **only the sampled token's log-prob is kept** at each step, instead of every step's full logits.

Sampling: logits / temperature, then top-p (the smallest set of tokens whose probability reaches ``top_p``), then one
draw per row by inverse CDF (one uniform number per row) from a ``torch.Generator`` seeded with ``seed``;
``temperature <= 0`` is argmax. The log-prob reported for each token is of the raw logits divided by the temperature
(the untempered ones when greedy), before top-p and before any logits processor, as ``generate``'s ``output_logits``
gave. Results are bit-reproducible for a given seed, batch, device and thread count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids so far [b, W+t], scores [b, V]) -> scores


@dataclass(frozen=True)
class Decoded:
    token_ids: list[int]  # the sampled tokens, through the first end token when there is one
    logprobs: list[float]
    stopped: bool  # ended on an end token (else it ran out of tokens)


def _pick(scores: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row [b] from scores [b, V] (already processed)."""
    if temperature <= 0:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores / temperature, dim=-1)  # [b, V]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)  # [b, V]
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p  # tokens past the nucleus
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return _draw(probs, generator)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row [b] from probabilities [b, V] (rows need not sum to 1), by inverse CDF: one uniform number
    per row picks the first token whose cumulative probability exceeds it. The same distribution as
    ``torch.multinomial``, which costs more on a 49k vocabulary (``benchmarks/engine_speed.py``, ``decode`` against
    ``decode-multinomial``). A token of probability 0 (outside the nucleus) is never drawn: its cumulative value
    equals its predecessor's."""
    cdf = probs.cumsum(dim=-1)  # [b, V]
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


@torch.no_grad()
def decode(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    temperature: float,
    max_tokens: int,
    seed: int,
    stop_ids: set[int],
    pad_id: int,
    top_p: float = 1.0,
    processor: Processor | None = None,
) -> list[Decoded]:
    """Sample a continuation of each prompt (rows that share a prompt should be adjacent: they share a prefill)."""
    device = model.device
    uniques: list[list[int]] = []
    row_of: list[int] = []  # prompt row -> index into uniques
    for p in prompts:
        if not uniques or list(p) != uniques[-1]:
            uniques.append(list(p))
        row_of.append(len(uniques) - 1)
    width = max(len(p) for p in uniques)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in uniques], device=device)  # [u, W]
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in uniques], device=device)  # [u, W]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [u, W]
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    expand = torch.tensor(row_of, device=device)  # [b]
    cache.batch_select_indices(expand)
    logits = out.logits[:, -1, :].float().index_select(0, expand)  # [b, V]
    mask = mask.index_select(0, expand)  # [b, W]
    seen = ids.index_select(0, expand)  # [b, W+t]: every row's ids so far (what a processor sees)
    next_pos = mask.sum(-1)  # [b]: the position of each row's next token

    generator = torch.Generator(device=device).manual_seed(seed)
    stops = torch.tensor(sorted(stop_ids), device=device)
    live = torch.arange(len(prompts), device=device)  # [a]: the prompt rows still decoding
    tokens: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    for step in range(max_tokens):
        scores = processor(seen, logits.clone()) if processor is not None else logits
        picked = _pick(scores, temperature, top_p, generator)  # [a]
        lp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)  # [a, V]
        picked_lp = lp.gather(-1, picked.unsqueeze(-1)).squeeze(-1)  # [a]
        ended = torch.isin(picked, stops)  # [a]
        for row, tok, tok_lp, end in zip(live.tolist(), picked.tolist(), picked_lp.tolist(), ended.tolist()):
            tokens[row].append(tok)
            logprobs[row].append(tok_lp)
            stopped[row] = end
        if step == max_tokens - 1:
            break
        if processor is None and bool(ended.any()):  # shrink: finished rows leave (a processor indexes every row)
            keep = (~ended).nonzero().squeeze(-1)  # [a']
            if keep.numel() == 0:
                break
            live, picked, mask, next_pos = live[keep], picked[keep], mask[keep], next_pos[keep]
            seen = seen[keep]
            cache.batch_select_indices(keep)
        elif bool(ended.all()):
            break
        seen = torch.cat([seen, picked.unsqueeze(-1)], dim=-1)
        mask = torch.cat([mask, torch.ones_like(picked).unsqueeze(-1)], dim=-1)  # [a, W+t+1]
        out = model(input_ids=picked.unsqueeze(-1), attention_mask=mask, position_ids=next_pos.unsqueeze(-1),
                    past_key_values=cache, use_cache=True)
        next_pos = next_pos + 1
        logits = out.logits[:, -1, :].float()  # [a, V]
    result = []
    for toks, lps, end in zip(tokens, logprobs, stopped):
        cut = next((i + 1 for i, t in enumerate(toks) if t in stop_ids), len(toks))  # a processor's rows run on
        result.append(Decoded(toks[:cut], lps[:cut], cut < len(toks) or end))
    return result
