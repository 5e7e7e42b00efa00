"""The rollout-engine interface and its registry."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

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


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do beyond generating (`RolloutEngine`): stages ask these, never the engine's type."""

    fields_in_one_pass: bool = False
    """``generate_fields``: labelled fields written in one pass, the labels forced in between (one prefill)."""
    model_in_memory: bool = False
    """``policy()``: the engine generates with a transformers model in this process, which the update may train in
    place (the engine is then dropped)."""
    takes_weights: bool = False
    """``release_memory()`` before the update trains, ``load_weights()`` after: the engine takes the trained
    weights in memory instead of being built again on a checkpoint."""


class RolloutEngine(Protocol):
    """``generate`` samples from text prompts (each wrapped in the chat template as a user turn);
    ``generate_from_ids`` continues exact token ids (a chat-formatted prompt plus, e.g., a primed start of the
    assistant turn): every sample starts right after the last given token. ``encode_prompt`` and ``encode_text``
    give the ids the two paths use, so callers can build primed prompts; ``decode`` turns ids back into text (special
    tokens dropped). ``capabilities`` says which of the last four methods the engine has (the others raise).
    Stages use nothing else of an engine."""

    capabilities: Capabilities

    def encode_prompt(self, prompt: str) -> list[int]: ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def generate_from_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int,
        top_p: float = 1.0,
    ) -> list[PromptResult]: ...

    def generate(
        self,
        prompts: Sequence[str],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int,
        top_p: float = 1.0,
    ) -> list[PromptResult]: ...

    def generate_fields(self, prompt_ids: Sequence[Sequence[int]], labels: Sequence[str], budgets: Sequence[int],
                        temperature: float, seed: int, one_line: Sequence[bool] = ()) -> list[tuple[str, int]]: ...

    def policy(self) -> tuple[object, object]: ...

    def release_memory(self) -> None: ...

    def load_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None: ...


class TokenEngine:
    """Shared part of the engines: ``generate`` on text prompts is ``generate_from_ids`` on their chat-formatted
    ids. Subclasses set ``tokenizer``, ``use_chat_template``, ``system_prompt`` and implement ``generate_from_ids``."""

    tokenizer: Any  # a Hugging Face tokenizer (called, .decode)
    use_chat_template: bool = True
    system_prompt: str | None = None
    capabilities = Capabilities()

    def encode_prompt(self, prompt: str) -> list[int]:
        text = format_chat(self.tokenizer, prompt, self.use_chat_template, self.system_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def generate(self, prompts: Sequence[str], n: int, temperature: float, max_tokens: int, seed: int,
                 top_p: float = 1.0) -> list[PromptResult]:
        return self.generate_from_ids([self.encode_prompt(p) for p in prompts], n, temperature, max_tokens, seed,
                                      top_p)

    def generate_from_ids(self, prompt_ids: Sequence[Sequence[int]], n: int, temperature: float, max_tokens: int,
                          seed: int, top_p: float = 1.0) -> list[PromptResult]:
        raise NotImplementedError

    # The capabilities' methods: an engine that declares one (`Capabilities`) overrides its method.
    def generate_fields(self, prompt_ids: Sequence[Sequence[int]], labels: Sequence[str], budgets: Sequence[int],
                        temperature: float, seed: int, one_line: Sequence[bool] = ()) -> list[tuple[str, int]]:
        raise self._lacks("fields_in_one_pass")

    def policy(self) -> tuple[object, object]:
        raise self._lacks("model_in_memory")

    def release_memory(self) -> None:
        raise self._lacks("takes_weights")

    def load_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        raise self._lacks("takes_weights")

    def _lacks(self, capability: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not have the capability {capability} "
                                   "(check engine.capabilities first)")


class LazyEngine:
    """An engine built on first use (a stage whose builder or replay needs no generation never loads the model)."""

    def __init__(self, make: Callable[[], RolloutEngine]) -> None:
        self._make = make
        self._engine: RolloutEngine | None = None

    def get(self) -> RolloutEngine:
        if self._engine is None:
            self._engine = self._make()
        return self._engine


class EngineCache:
    """The one engine of this process: every stage of a step that generates with the same checkpoint (rollout,
    revise, extract, replay) gets the same engine, built once; asking for another checkpoint (the next step's) drops
    the old one first, so at most one model is held. ``key`` names the checkpoint by its URI and content (its
    manifest's write time) and the engine's settings. ``loads`` counts the engines built (a test reads it). The
    update takes the engine (``take``) and trains its model in place, so a step reads its checkpoint once."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._engine: RolloutEngine | None = None
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, key: tuple, make: Callable[[], RolloutEngine]) -> RolloutEngine:
        with self._lock:
            if self._key != key or self._engine is None:
                self._engine, self._key = None, None  # free the old model before loading the next
                self._engine = make()
                self._key = key
                self.loads += 1
            return self._engine

    def take(self, key: tuple) -> RolloutEngine | None:
        """Hand over the engine built for ``key`` and forget it (the update trains that engine's model in place);
        None, dropping whatever is held, when the engine holds another checkpoint or none."""
        with self._lock:
            engine = self._engine if self._key == key else None
            self._engine, self._key = None, None
            return engine

    def put(self, key: tuple, engine: RolloutEngine) -> None:
        """Hold ``engine`` as the engine of ``key``: an engine that took a newer checkpoint's weights in memory
        (``capabilities.takes_weights``) serves the next step without being built again (``loads`` does not count
        it)."""
        with self._lock:
            self._engine, self._key = engine, key

    def clear(self) -> None:
        """Drop the engine (one model in memory at a time)."""
        with self._lock:
            self._engine, self._key = None, None


ENGINE_CACHE = EngineCache()

ENGINES: Registry[type[RolloutEngine]] = Registry("rollout engine")  # engine classes, by name


def make_engine(name: str, model_path: str, **options) -> RolloutEngine:
    """Build the engine ``name`` on the model folder ``model_path``."""
    return ENGINES.get(name)(model_path, **options)  # type: ignore[call-arg]


def engine_capabilities(name: str) -> Capabilities:
    """What the engine ``name`` can do, before one is built (a class attribute of each engine)."""
    return ENGINES.get(name).capabilities


def format_chat(tokenizer, prompt: str, use_chat_template: bool, system_prompt: str | None) -> str:
    """The text the model continues: the prompt as a user turn in the chat template (or the raw prompt)."""
    if not use_chat_template or not getattr(tokenizer, "chat_template", None):
        return prompt
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
