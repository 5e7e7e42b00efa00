"""Meta-experience learning's pure parts and its replay modes: pairs, the LLM builder's parser (malformed output is
rejected with a reason, never raised), primed field-by-field generation, the prompts, replay by re-execution (real
sandbox) and in context (tiny model), and the config's base chains for the method files."""
from __future__ import annotations

import dataclasses
import random

import pytest

from mel.config import ConfigError, load_config
from mel.data import load_taskset
from mel.engines.base import Capabilities, LazyEngine
from mel.experience import BUILDERS, REPLAYS, BuildContext, PairInput, ReplayContext, ReplayInput, draw_pairs, p_pair
from mel.experience.llm import cut_field, generate_primed, parse_meta_experience
from mel.experience.prompts import meta_experience_prompt, validation_prompt
from mel.experience.types import render_experience

from conftest import REPO

GOOD = ("Bifurcation step: the loop stops one element early.\n"
        "Critique: the failing solution iterates range(n - 1) and never reads the last item, while the passing one "
        "covers all n items.\n"
        "Heuristic: When a loop must visit every element, I should check that the bound includes the last index.")


# --- pairs -------------------------------------------------------------------------------------------------------

def test_pairs_need_both_a_pass_and_a_fail():
    rng = random.Random(0)
    assert draw_pairs([True, True], 0, 1, rng) == []
    assert draw_pairs([False, False], 0, 1, rng) == []
    (pair,) = draw_pairs([True, False, False], 3, 1, rng)
    assert pair.prompt_index == 3 and pair.plus == 0 and pair.minus in (1, 2)


def test_several_pairs_are_distinct_and_capped_by_what_exists():
    pairs = draw_pairs([True, False, True, False], 0, 10, random.Random(1))
    assert len(pairs) == 4  # 2 passing x 2 failing
    assert len({(p.plus, p.minus) for p in pairs}) == 4
    assert [p.pair_index for p in pairs] == [0, 1, 2, 3]


def test_without_contrast_failing_rollouts_are_drawn_alone_even_from_all_negative_groups():
    singles = draw_pairs([False, False, False], 0, 2, random.Random(0), contrastive=False)
    assert len(singles) == 2 and all(p.plus is None for p in singles)
    assert draw_pairs([True, True], 0, 2, random.Random(0), contrastive=False) == []


def test_p_pair_is_the_share_of_mixed_groups():
    assert p_pair({0: [True, False], 1: [True, True], 2: [False, False], 3: [False, True]}) == 0.5


# --- the LLM builder's parser ----------------------------------------------------------------------------------

def test_a_well_formed_meta_experience_is_parsed_into_its_three_fields():
    m = parse_meta_experience(GOOD)
    assert m.ok
    assert m.bifurcation_step == "the loop stops one element early."
    assert m.critique.startswith("the failing solution") and m.heuristic.startswith("When a loop")
    assert parse_meta_experience(m.render()) == m  # the rendered text parses back to itself


@pytest.mark.parametrize("text, reason", [
    ("", "missing field 'Bifurcation step'"),
    ("Bifurcation step: x early\nCritique: it fails", "missing field 'Heuristic'"),
    ("Bifurcation step:\nCritique: the bound is wrong\nHeuristic: check bounds", "empty field 'Bifurcation step'"),
    ("Bifurcation step: 12 34\nCritique: the bound is wrong\nHeuristic: check bounds",
     "field 'Bifurcation step' has no words"),
    ("Bifurcation step: loop\nCritique: " + "bad " * 20 + "\nHeuristic: check bounds", "field 'Critique' repeats"),
    ("Bifurcation step: loop\nCritique: wrong bound\nHeuristic: always call add(a, b) first",
     "heuristic names the problem's specific 'add'"),
])
def test_a_malformed_meta_experience_is_rejected_with_its_reason(text, reason):
    m = parse_meta_experience(text, specifics=("add",))
    assert not m.ok and m.reject_reason.startswith(reason)


def test_the_parser_never_raises_on_junk():
    for junk in ["\x00\x01", "Heuristic:" * 500, "Critique: a\nCritique: b", "::::", "é" * 10_000]:
        parse_meta_experience(junk, specifics=("f", "12"))


def test_a_heuristic_may_use_the_entry_point_as_an_english_word():
    text = GOOD.replace("I should check", "I should add a check")
    assert parse_meta_experience(text, specifics=("add",)).ok


def test_a_field_is_cut_at_the_next_label_the_policy_wrote_itself():
    assert cut_field(" the loop bound\nCritique: made up\nHeuristic: more") == "the loop bound"


# --- primed generation with a real (tiny) model --------------------------------------------------------------------

class _RoundsOnly:
    """An engine that does not write fields in one pass (as vLLM's): generate_primed falls back to one generation
    per field."""

    capabilities = Capabilities()

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.encode_prompt, self.encode_text = engine.encode_prompt, engine.encode_text

    def generate_from_ids(self, ids, **kw):
        self.calls.append([list(x) for x in ids])
        return self.engine.generate_from_ids(ids, **kw)


def test_primed_generation_conditions_each_field_on_the_earlier_ones(tiny_model, tiny_model_path):
    from mel.engines.hf import TransformersEngine

    model, tok = tiny_model
    engine = _RoundsOnly(TransformersEngine(tiny_model_path, model=model, tokenizer=tok, batch_size=8))
    (text, tokens), = generate_primed(engine, ["Explain the failure."], (4, 5, 6), temperature=1.0, seed=0)
    assert text.startswith("Bifurcation step:") and "\nCritique:" in text and "\nHeuristic:" in text
    assert 0 < tokens <= 15
    calls = engine.calls
    base = engine.encode_prompt("Explain the failure.")
    assert all(c[0][: len(base)] == base for c in calls)  # every field continues the same instruction
    assert len(calls[1][0]) > len(calls[0][0]) < len(calls[2][0])  # later fields see the earlier ones
    prefix_of_field_2 = engine.encode_text(text.split("\nHeuristic:")[0] + "\nHeuristic:")
    assert calls[2][0][len(base):] == prefix_of_field_2


def test_one_pass_and_per_field_generation_give_the_same_structure(tiny_model, tiny_model_path):
    from mel.engines.hf import TransformersEngine

    model, tok = tiny_model
    engine = TransformersEngine(tiny_model_path, model=model, tokenizer=tok, batch_size=8)
    for eng in (engine, _RoundsOnly(engine)):
        outputs = generate_primed(eng, ["Explain A.", "Explain B."], (4, 5, 6), temperature=1.0, seed=0)
        for text, tokens in outputs:
            m = parse_meta_experience(text)
            assert m.bifurcation_step and m.critique and m.heuristic, text
            assert 0 < tokens <= 15


def test_the_llm_builder_returns_one_row_per_pair_and_its_retro_context(tiny_model, tiny_model_path):
    from mel.config import MelConfig
    from mel.engines.hf import TransformersEngine

    model, tok = tiny_model
    problem = load_taskset("easy_code", None)[0]
    pairs = [PairInput(problem, "def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b", "failed")] * 2
    ctx = BuildContext(LazyEngine(lambda: TransformersEngine(tiny_model_path, model=model, tokenizer=tok)),
                       MelConfig(builder="llm", max_new_tokens=(3, 3, 3)), seed=1)
    built = BUILDERS.get("llm")(pairs, ctx)
    assert len(built) == 2
    assert built[0].retro_prompt == meta_experience_prompt(problem.prompt, pairs[0].y_plus, pairs[0].y_minus)
    assert all(0 < b.gen_tokens <= 9 for b in built)
    assert all(b.experience.ok or b.experience.reject_reason for b in built)


def test_the_self_critique_builder_sees_only_the_failing_rollout(tiny_model, tiny_model_path):
    from mel.config import MelConfig
    from mel.engines.hf import TransformersEngine
    from mel.experience.prompts import self_critique_prompt

    model, tok = tiny_model
    problem = load_taskset("easy_code", None)[0]
    pairs = [PairInput(problem, None, "def add(a, b):\n    return a - b", "failed")]
    ctx = BuildContext(LazyEngine(lambda: TransformersEngine(tiny_model_path, model=model, tokenizer=tok)),
                       MelConfig(builder="self_critique", contrastive=False, max_new_tokens=(3, 3, 3)), seed=2)
    (built,) = BUILDERS.get("self_critique")(pairs, ctx)
    assert built.retro_prompt == self_critique_prompt(problem.prompt, pairs[0].y_minus)
    assert "return a - b" in built.retro_prompt and "Correct" not in built.retro_prompt.replace("Incorrect", "")
    assert 0 < built.gen_tokens <= 9


def test_the_template_builder_generates_nothing_and_conditions_on_x_y_plus_y_minus():
    from mel.config import MelConfig

    problem = load_taskset("easy_code", None)[0]
    pairs = [PairInput(problem, "def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b", "failed",
                       "add(1, 2) returned -1, expected 3")]

    def no_engine():
        raise AssertionError("the template builder must not load the policy")

    (built,) = BUILDERS.get("template")(pairs, BuildContext(LazyEngine(no_engine), MelConfig(builder="template"), 0))
    assert built.experience.ok and built.gen_tokens == 0
    assert built.experience.bifurcation_step == "return a - b"
    assert "return a + b" in built.retro_prompt and "return a - b" in built.retro_prompt
    # M quotes the verdict ("returned -1, expected 3"): C_retro shows it, so the NLL term asks nothing unseen
    assert "returned -1, expected 3" in built.experience.critique
    assert "Test result of the failing solution: failed: add(1, 2) returned -1, expected 3" in built.retro_prompt


def test_the_llm_builder_refuses_rows_without_y_plus():
    problem = load_taskset("easy_code", None)[0]
    from mel.config import MelConfig

    ctx = BuildContext(LazyEngine(lambda: None), MelConfig(builder="llm"), seed=0)
    with pytest.raises(ValueError, match="needs \\(y\\+, y-\\) pairs"):
        BUILDERS.get("llm")([PairInput(problem, None, "x")], ctx)


def test_prompts_fill_the_paper_slots():
    text = meta_experience_prompt("Q?", "GOOD", "BAD")
    tail = text[text.index("Here the question"):]
    assert tail.index("Q?") < tail.index("BAD") < tail.index("Incorrect") < tail.index("GOOD") < tail.rindex("Correct")
    assert text.startswith("You are a Meta-Cognitive Reasoning Analyst")
    replay = validation_prompt(render_experience("s", "c", "h"), "Q?")
    assert "Heuristic: h" in replay and replay.endswith("Answer the following question:\nQ?")


# --- replay validation -------------------------------------------------------------------------------------------

def _verify(problems, completions):
    from mel.verify import verify_problems

    return verify_problems(problems, completions, timeout_s=5.0, workers=2)


def _ctx(make_engine=lambda: None, samples=1):
    return ReplayContext(LazyEngine(make_engine), _verify, samples, temperature=1.0, max_new_tokens=8, seed=0)


def test_reexecute_keeps_m_iff_y_plus_passes_and_y_minus_fails():
    add = load_taskset("easy_code", None)[0]
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    items = [ReplayInput(add, good, bad, "M"), ReplayInput(add, bad, bad, "M"), ReplayInput(add, good, good, "M"),
             ReplayInput(add, None, bad, "M"), ReplayInput(add, None, good, "M")]
    outcomes = REPLAYS.get("reexecute")(items, _ctx())
    assert [o.accepted for o in outcomes] == [True, False, False, True, False]
    assert "y+ passed" in outcomes[0].detail and "y- failed" in outcomes[0].detail


def test_no_replay_keeps_everything():
    add = load_taskset("easy_code", None)[0]
    assert all(o.accepted for o in REPLAYS.get("none")([ReplayInput(add, None, "x", "M")] * 3, _ctx()))


def test_in_context_replay_puts_m_in_the_prompt_and_keeps_m_iff_a_replay_passes(tiny_model, tiny_model_path):
    from mel.engines.hf import TransformersEngine
    from mel.data import Problem

    model, tok = tiny_model
    engine = TransformersEngine(tiny_model_path, model=model, tokenizer=tok, batch_size=16)
    seen = []
    original = engine.generate

    def spy(prompts, **kw):
        seen.extend(prompts)
        return original(prompts, **kw)

    engine.generate = spy
    anything = Problem("any", "regex", "Say something.", answer=r"[\s\S]*")
    nothing = Problem("none", "regex", "Say something.", answer=r"^(?!)")
    items = [ReplayInput(anything, "a", "b", "Heuristic: MARKER-1"), ReplayInput(nothing, "a", "b", "MARKER-2")]
    outcomes = REPLAYS.get("in_context")(items, _ctx(lambda: engine, samples=2))
    assert [o.accepted for o in outcomes] == [True, False]
    assert [o.status for o in outcomes] == ["passed", "failed"]
    assert "MARKER-1" in seen[0] and "MARKER-2" in seen[1]
    assert all(0 < o.gen_tokens <= 16 for o in outcomes)


def test_unknown_builder_and_replay_names_list_the_known_ones():
    with pytest.raises(KeyError, match="known: llm, self_critique, template"):
        BUILDERS.get("gpt")
    with pytest.raises(KeyError, match="known: in_context, none, reexecute"):
        REPLAYS.get("oracle")


# --- method configs ----------------------------------------------------------------------------------------------

METHODS = sorted((REPO / "configs" / "methods").glob("*.yaml"))


def test_every_method_listed_in_the_issue_has_a_config():
    names = {p.stem for p in METHODS}
    assert {"grpo", "mel", "mel_code", "self_critique", "mel_code_no_replay", "mel_code_no_contrastive",
            "mel_code_bifurcation_skip", "rft_me", "reinforcepp_me", "rmel", "mel_extra", "rmel_tau0",
            "rmel_b1"} <= names


@pytest.mark.parametrize("path", METHODS, ids=lambda p: p.stem)
def test_method_configs_load_on_their_base_and_on_the_tiny_config(path):
    demo = load_config(str(path))
    tiny = load_config(str(path), base=str(REPO / "configs" / "tiny.yaml"))
    assert demo.model.source == "smollm2-135m-instruct" and tiny.model.source == "tiny-random"
    # the same method, with the tiny config's shorter generations (as its rollout.max_new_tokens)
    assert dataclasses.replace(tiny.mel, max_new_tokens=demo.mel.max_new_tokens) == demo.mel
    assert tiny.mel.max_new_tokens == (16, 32, 16) and demo.algorithm.name == tiny.algorithm.name
    assert demo.run.name == tiny.run.name == path.stem


def test_ablations_change_exactly_one_thing_from_mel_code():
    base = load_config(str(REPO / "configs/methods/mel_code.yaml")).mel
    changed = {
        "mel_code_no_replay": {"replay": "none"},
        "mel_code_bifurcation_skip": {"bifurcation": "first_plan_step"},
        "mel_code_no_contrastive": {"contrastive": False, "bifurcation": "first_plan_step"},
    }
    import dataclasses

    for name, fields in changed.items():
        mel = load_config(str(REPO / f"configs/methods/{name}.yaml")).mel
        diff = {f.name: getattr(mel, f.name) for f in dataclasses.fields(mel)
                if getattr(mel, f.name) != getattr(base, f.name)}
        assert diff == fields, name


def test_a_base_chain_that_loops_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("override, message", [
    (["mel.replay=in_context"], "mel.builder"),
    (["mel.builder=self_critique"], "mel.contrastive"),
    (["mel.builder=template", "mel.max_experiences=0"], "mel.max_experiences"),
    (["revise.mode=rmel"], "mel.builder"),
    (["mel.builder=template", "revise.mode=rmel", "revise.budget=0"], "revise.budget"),
])
def test_inconsistent_mel_settings_are_refused_with_the_field_to_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)
