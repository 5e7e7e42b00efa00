"""The transformers rollout engine: batched sampling with a KV cache, on CPU (or one GPU), bit-reproducible for a
given seed, batch size and thread count.

Prompts are left-padded; each prompt is repeated ``n`` times and sampled in batches of ``batch_size`` sequences. The
log-prob of each sampled token is taken from the raw logits divided by the temperature (top-p truncation, when used,
is not renormalized into the reported log-probs: they are the policy's, which the update recomputes).
"""
from __future__ import annotations

from typing import Sequence

import torch

from mel.engines.base import ENGINES, PromptResult, Sample, TokenEngine


@ENGINES.register("transformers")
class TransformersEngine(TokenEngine):
    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        use_chat_template: bool = True,
        system_prompt: str | None = None,
        batch_size: int = 32,
        model=None,
        tokenizer=None,
    ) -> None:
        if model is None or tokenizer is None:
            from mel.models import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(model_path, dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        eos = model.generation_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def _sample_batch(
        self, prompt_ids: list[list[int]], temperature: float, max_tokens: int, seed: int, top_p: float
    ) -> list[Sample]:
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompt_ids])  # [b, W]
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])  # [b, W]
        torch.manual_seed(seed)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_tokens,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, width:]  # [b, T]
        logits = torch.stack(out.logits, dim=1).float()  # [b, T, V]
        logprobs = torch.log_softmax(logits / temperature, dim=-1)  # [b, T, V]
        token_lp = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)  # [b, T]
        samples = []
        for row, lp_row in zip(new_tokens.tolist(), token_lp.tolist()):
            stop_at = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            length = len(row) if stop_at is None else stop_at + 1
            ids = row[:length]
            samples.append(
                Sample(
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    token_ids=ids,
                    logprobs=lp_row[:length],
                    finish_reason="length" if stop_at is None else "stop",
                )
            )
        return samples

    def generate_from_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int,
        top_p: float = 1.0,
    ) -> list[PromptResult]:
        encoded = [list(ids) for ids in prompt_ids]
        if any(not ids for ids in encoded):
            raise ValueError("generate_from_ids: every prompt needs at least one token")
        flat = [ids for ids in encoded for _ in range(n)]  # prompt-major: prompt i's samples are contiguous
        samples: list[Sample] = []
        for b, start in enumerate(range(0, len(flat), self.batch_size)):
            samples += self._sample_batch(flat[start:start + self.batch_size], temperature, max_tokens,
                                          seed * 1_000_003 + b, top_p)
        return [PromptResult(encoded[i], samples[i * n:(i + 1) * n]) for i in range(len(encoded))]
