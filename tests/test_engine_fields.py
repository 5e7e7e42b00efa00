"""One-pass field-by-field generation: the schedule forces each next label after a field's budget or its end token,
never lets the turn end before the last field, and the transformers engine's ``generate_fields`` writes the labels
in order with every field within its budget."""
from __future__ import annotations

import torch

from mel.engines.fields import FieldSchedule

V = 10  # a toy vocabulary: 9 is the stop token, 7 ends field 0 early, 5 and 6 are label tokens


def _run(schedule: FieldSchedule, picks: list[list[int]]) -> list[list[int]]:
    """Drive the processor like ``generate`` does: each step the row takes the forced token, else its pick."""
    rows = len(picks)
    ids = torch.zeros((rows, 1), dtype=torch.long)
    out: list[list[int]] = [[] for _ in range(rows)]
    for step in range(schedule.max_new_tokens()):
        scores = schedule(ids, torch.zeros((rows, V)))
        chosen = []
        for i in range(rows):
            allowed = torch.isfinite(scores[i]).nonzero().flatten().tolist()
            want = picks[i][step] if step < len(picks[i]) else 0
            chosen.append(want if want in allowed else allowed[0])
        for i, t in enumerate(chosen):
            out[i].append(t)
        ids = torch.cat([ids, torch.tensor(chosen).unsqueeze(1)], dim=1)
    return out


def test_labels_are_forced_after_each_budget_and_the_turn_cannot_end_early():
    schedule = FieldSchedule([2, 3, 2], [[5], [6, 6]], [set(), set(), set()], {9})
    (row,) = _run(schedule, [[9, 1, 1, 9, 1, 2, 3, 4, 9]])
    # field 0: the stop token 9 is refused (token 0 taken instead); label 5; field 1 (stop refused again); label 6 6;
    # field 2, the last, may stop
    assert row == [0, 1, 5, 0, 1, 2, 6, 6, 9, 0]
    assert schedule.forced_tokens(0) == 3


def test_an_end_token_closes_its_field_before_the_budget():
    schedule = FieldSchedule([4, 2], [[5]], [{7}, set()], {9})
    rows = _run(schedule, [[7, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    assert rows[0][:4] == [7, 5, 1, 1]  # field 0 ended at 7, the label follows at once
    assert rows[1][:6] == [1, 1, 1, 1, 5, 1]  # the other row spends its whole budget


def test_a_leading_blank_token_does_not_close_an_empty_field():
    schedule = FieldSchedule([4, 2], [[5]], [{7, 8}, set()], {9}, blank_ids={8})
    (row,) = _run(schedule, [[8, 1, 7, 1, 1, 1]])
    assert row[:4] == [8, 1, 7, 5]  # 8 (a bare newline) opened the field; 7 closed it after content


def test_generate_fields_writes_every_label_once_and_in_order(tiny_model, tiny_model_path):
    from mel.engines.hf import TransformersEngine

    model, tok = tiny_model
    engine = TransformersEngine(tiny_model_path, model=model, tokenizer=tok, batch_size=2)
    prompts = [engine.encode_prompt(p) + engine.encode_text("A:") for p in ("one", "two", "three longer prompt")]
    out = engine.generate_fields(prompts, ["A:", "B:", "C:"], (3, 4, 5), temperature=1.0, seed=0)
    assert len(out) == 3
    for text, tokens in out:
        assert text.count("\nB:") == 1 and text.count("\nC:") == 1 and text.index("\nB:") < text.index("\nC:")
        assert 1 <= tokens <= 3 + 4 + 5
        field_a = text.split("\nB:")[0]
        assert len(engine.encode_text(field_a)) <= 3 + 1  # within budget (re-tokenizing may merge or split one)
