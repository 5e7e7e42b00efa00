"""The rollout-engine interface and its registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence

from mel.registry import Registry


@dataclass(frozen=True)
class Sample:
    text: str
    token_ids: list[int]  # completion tokens, including the end-of-turn token when generation stopped on it
    logprobs: list[float]  # log-prob of each sampled token under the temperature-scaled policy
    finish_reason: Literal["stop", "length"]


@dataclass(frozen=True)
class PromptResult:
    prompt_token_ids: list[int]  # the prompt as the model saw it (chat template applied)
    samples: list[Sample]


class RolloutEngine(Protocol):
    def generate(
        self,
        prompts: Sequence[str],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int,
        top_p: float = 1.0,
    ) -> list[PromptResult]: ...


EngineFactory = Callable[..., RolloutEngine]
ENGINES: Registry[EngineFactory] = Registry("rollout engine")


def make_engine(name: str, model_path: str, **options) -> RolloutEngine:
    """Build the engine ``name`` on the model folder ``model_path``."""
    return ENGINES.get(name)(model_path, **options)


def format_chat(tokenizer, prompt: str, use_chat_template: bool, system_prompt: str | None) -> str:
    """The text the model continues: the prompt as a user turn in the chat template (or the raw prompt)."""
    if not use_chat_template or not getattr(tokenizer, "chat_template", None):
        return prompt
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
