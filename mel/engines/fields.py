"""Field-by-field generation in one pass (the transformers engine's ``generate_fields``).

A structured answer ``L1 v1 L2 v2 ... Lk vk`` (labels L given, values v generated) is produced by one ``generate``
call: a logits processor lets the model write field f freely until it has spent ``budgets[f]`` tokens or written a
token that ends the field (``end_ids[f]``, e.g. a newline for a one-line field), then forces the next label's tokens,
and forbids ending the turn before the last field. An end token closes a field only once the field has some
non-whitespace content (a model that opens with a newline still writes its one-line field). Each value is conditioned
on every earlier label and value, as separate primed generations would be, but the prompt is prefilled once instead
of k times (measured on 2 CPU cores with SmolLM2-135M: prefilling 8 prompts of 1,150 tokens took 21 s, decoding 48
tokens after them 5.5 s). The price: a field cannot end by ending the turn, so non-final fields run to their end
token or budget.
"""
from __future__ import annotations

from typing import AbstractSet, Sequence

import torch
from transformers import LogitsProcessor


class FieldSchedule(LogitsProcessor):
    def __init__(self, budgets: Sequence[int], next_labels: Sequence[Sequence[int]],
                 end_ids: Sequence[set[int]], stop_ids: set[int], blank_ids: AbstractSet[int] = frozenset()) -> None:
        if len(next_labels) != len(budgets) - 1 or len(end_ids) != len(budgets):
            raise ValueError("need one budget and one end set per field, and a label for every field after the first")
        self.budgets = list(budgets)
        self.next_labels = [list(x) for x in next_labels]
        self.end_ids = list(end_ids)
        self.stop_ids = sorted(stop_ids)
        self.blank_ids = blank_ids  # whitespace-only tokens: an end token closes a field only after some content
        self.state: list[dict] | None = None

    def forced_tokens(self, row: int) -> int:
        """Label tokens forced into ``row`` (the rest of its tokens the model chose)."""
        return self.state[row]["n_forced"] if self.state else 0

    def max_new_tokens(self) -> int:
        return sum(self.budgets) + sum(len(x) for x in self.next_labels)

    def _advance(self, row: dict, token: int) -> None:
        """Account for the token a row emitted at the previous step."""
        if row["forced"]:
            if not row["queue"]:
                row.update(field=row["field"] + 1, count=0, content=False)
            row["forced"] = False
            return
        row["count"] += 1
        row["content"] = row["content"] or token not in self.blank_ids
        ended = token in self.end_ids[row["field"]] and row["content"]
        f = row["field"]
        if f < len(self.budgets) - 1 and (row["count"] >= self.budgets[f] or ended):
            row["queue"] = list(self.next_labels[f])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = input_ids.shape[0]
        if self.state is None:
            self.state = [{"field": 0, "count": 0, "queue": [], "forced": False, "n_forced": 0, "content": False}
                          for _ in range(batch)]
        else:
            last = input_ids[:, -1].tolist()  # [b]
            for row, token in zip(self.state, last):
                self._advance(row, token)
        for i, row in enumerate(self.state):
            if row["queue"]:
                forced = row["queue"].pop(0)
                scores[i, :] = -torch.inf  # [V]
                scores[i, forced] = 0.0
                row["forced"] = True
                row["n_forced"] += 1
            elif row["field"] < len(self.budgets) - 1:
                scores[i, self.stop_ids] = -torch.inf  # not done yet: the turn may not end before the last field
        return scores


def newline_token_ids(tokenizer) -> tuple[set[int], set[int], set[int]]:
    """Ids of the vocabulary's tokens whose text holds a newline, two newlines, and only whitespace."""
    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    return ({i for i, t in enumerate(texts) if "\n" in t}, {i for i, t in enumerate(texts) if "\n\n" in t},
            {i for i, t in enumerate(texts) if not t.strip()})
