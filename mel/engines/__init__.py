"""Rollout engines behind one small interface.

``engine.generate(prompts, n, temperature, max_tokens, seed)`` returns, for each prompt, the chat-formatted prompt's
token ids and ``n`` samples, each with its text, token ids and the log-probs of the sampled tokens. Engines are
registered by name (``ENGINES``); the vLLM engine is imported only when asked for (it is the ``[gpu]`` extra).
"""
from __future__ import annotations

from mel.engines.base import ENGINES, PromptResult, RolloutEngine, Sample, make_engine
from mel.engines import hf as _hf  # noqa: F401  (registers "transformers")
from mel.engines import vllm_engine as _vllm  # noqa: F401  (registers "vllm"; imports vllm lazily)

__all__ = ["ENGINES", "PromptResult", "RolloutEngine", "Sample", "make_engine"]
