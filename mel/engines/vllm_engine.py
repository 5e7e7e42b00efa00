"""The vLLM rollout engine (GPU; the ``[gpu]`` extra). ``vllm`` is imported only when this engine is built, so the
CPU install never needs it. Same interface and outputs as the transformers engine.

Weights: one ``LLM`` per step. The stages of a step share it (`mel.engines.base.ENGINE_CACHE`, in the flow's process
or, on Ray, in the run's resident policy worker); the update drops it before training, and the next step's rollout
builds the next one on the checkpoint the update wrote: the weights are reloaded once per step, not handed from the
trainer in place (not built yet)."""
from __future__ import annotations

from typing import Sequence

from mel.engines.base import ENGINES, PromptResult, Sample, TokenEngine


@ENGINES.register("vllm")
class VLLMEngine(TokenEngine):
    def __init__(
        self,
        model_path: str,
        dtype: str = "bfloat16",
        use_chat_template: bool = True,
        system_prompt: str | None = None,
        batch_size: int = 0,
        gpu_memory_utilization: float = 0.5,
        device: str = "auto",
    ) -> None:
        """``device`` is ``model.device``: vLLM places the model on its GPU itself, so only ``cpu`` means anything
        here, and it is refused (the transformers engine is the CPU one)."""
        if device == "cpu":
            raise ValueError("model.device=cpu: the vllm engine runs on a GPU; use rollout.engine=transformers on CPU")
        try:
            from vllm import LLM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the vllm engine needs the GPU extra: pip install 'mel-rlvr[gpu]'") from exc
        self.llm = LLM(model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization)
        self.tokenizer = self.llm.get_tokenizer()
        self.use_chat_template = use_chat_template
        self.system_prompt = system_prompt

    def generate_from_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int,
        top_p: float = 1.0,
    ) -> list[PromptResult]:  # pragma: no cover - needs a GPU
        from vllm import SamplingParams, TokensPrompt

        encoded = [list(ids) for ids in prompt_ids]
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                                logprobs=0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in encoded], params)
        results = []
        for ids, out in zip(encoded, outputs):
            samples = [
                Sample(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    logprobs=[lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)],
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                )
                for c in out.outputs
            ]
            results.append(PromptResult(ids, samples))
        return results
