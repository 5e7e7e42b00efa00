"""The terminal output of a run (`mel.progress`) and of ``mel eval`` (`cli.eval.scores_table`), rendered with rich:
plain text off a terminal, every line a test or a script greps for kept, the summary tables holding the values."""
from __future__ import annotations

import io
from types import SimpleNamespace

from mel.progress import Progress

ROW = {"step": 0, "reward_mean": 0.125, "pass_rate": 0.5, "mixed_group_rate": 0.25, "loss": -0.01234, "kl": 0.0012,
       "clip_frac": 0.1, "grad_norm": 1.234, "gen_tokens_per_s": 123.45, "train_tokens_per_s": 4567.8,
       "num_pairs": None, "p_pair": None, "p_accept": None, "p_usable": None, "retention": None,
       "num_experiences": None, "nll_loss": None}


def _table(text: str, first: str = "step") -> list[list[str]]:
    """The rows of the table whose header line starts with ``first``, split on runs of spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def _run_done(metrics: list[dict]) -> str:
    buf = io.StringIO()
    progress = Progress(stream=buf)
    progress.run_done("runs/x/", metrics, "runs/x/step_0001/checkpoint")
    return buf.getvalue()


def test_the_run_summary_table_holds_every_steps_metrics():
    second = {**ROW, "step": 1, "reward_mean": 0.75, "pass_rate": 0.625, "loss": 0.5, "kl": 0.0345,
              "gen_tokens_per_s": 99.96}
    rows = _table(_run_done([ROW, second]))
    assert rows[0] == ["step", "reward", "pass", "mixed", "loss", "kl", "clip", "gnorm", "gen", "tok/s", "train",
                       "tok/s"]
    assert rows[1] == ["1", "0.125", "0.500", "0.250", "-0.0123", "0.0012", "0.100", "1.234", "123.5", "4567.8"]
    assert rows[2] == ["2", "0.750", "0.625", "0.250", "+0.5000", "0.0345", "0.100", "1.234", "100.0", "4567.8"]
    assert rows[3][:2] == ["wall", "time"]  # the line after the table: no other row


def test_a_mel_run_adds_its_columns_and_a_missing_value_is_a_dash():
    mel = {**ROW, "num_pairs": 4, "p_pair": 0.5, "p_accept": 0.25, "p_usable": None, "retention": 0.875,
           "num_experiences": 3, "nll_loss": 0.4321}
    rows = _table(_run_done([mel, {**ROW, "step": 1}]))
    assert rows[0][-6:] == ["p_pair", "p_acc", "p_use", "retain", "M", "nll"]
    assert rows[1][-6:] == ["0.50", "0.25", "-", "0.88", "3", "0.432"]
    assert rows[2][-6:] == ["-"] * 6  # a step without meta-experiences


def test_stage_lines_and_the_reuse_lines_are_plain_text():
    buf = io.StringIO()
    progress = Progress(stream=buf)
    cfg = SimpleNamespace(run=SimpleNamespace(steps=2, name="demo"), algorithm=SimpleNamespace(name="grpo"),
                          mel=SimpleNamespace(enabled=False), data=SimpleNamespace(taskset="mbpp", prompts_per_step=8),
                          rollout=SimpleNamespace(group_size=4), model=SimpleNamespace(source="tiny-random"))
    progress.run_start(cfg, "runs/x")
    progress.stage_start("update", 0)
    progress.stage_done(SimpleNamespace(step=0, stage="update", reused=False, summary="loss [bold]+0.1[/] :x:",
                                        notes=("[step 1] replayed the update ...",)))
    progress.stage_done(SimpleNamespace(step=1, stage="rollout", reused=True, summary="32 samples", notes=()))
    progress.run_done("runs/x", [ROW], "ck")
    out = buf.getvalue()
    assert "\x1b" not in out  # no ANSI codes off a terminal
    assert "mel run demo: 2 steps of grpo on mbpp (8 prompts x 4 samples), model tiny-random" in out
    assert "[step 1/2] update   ..." in out
    assert "[step 1/2] update   done" in out and "loss [bold]+0.1[/] :x:" in out  # markup and emoji codes as given
    assert "[step 2/2] rollout  reused" in out
    assert "done" in out.split("[step 1] replayed the update ...")[0]  # a stage's notes follow its line
    assert "reused 1 of 2 stages: step 2 rollout" in out

    buf = io.StringIO()
    progress.stream = buf
    progress.reused, progress.computed = ["step 1 rollout", "step 1 update"], []
    progress.run_done("runs/x", [ROW], "ck")
    assert "all 2 stages reused from cached artifacts; nothing recomputed" in buf.getvalue()


def test_a_wide_table_is_not_squashed_on_a_narrow_console(monkeypatch):
    import mel.console

    monkeypatch.setattr(mel.console, "PLAIN_WIDTH", 40)
    mel_row = {**ROW, "num_pairs": 4, "p_pair": 0.5, "p_accept": 0.25, "p_usable": 0.5, "retention": 0.875,
               "num_experiences": 3, "nll_loss": 0.4321}
    out = _run_done([mel_row])
    assert "…" not in out and len(_table(out)[1]) == 16


def test_the_eval_scores_table():
    from cli.eval import scores_table
    from mel.console import show

    rows = [{"benchmark": "humaneval", "column": "main", "step": 2, "sampling": "t0.6-n8", "metric": "pass@8",
             "value": 0.36666, "num_problems": 164},
            {"benchmark": "gsm8k", "column": "main", "step": -1, "sampling": "greedy", "metric": "pass@1",
             "value": 1.0, "num_problems": 3}]
    buf = io.StringIO()
    show(scores_table(rows), buf)
    assert _table(buf.getvalue(), "benchmark") == [
        ["benchmark", "column", "step", "sampling", "metric", "value", "problems"],
        ["humaneval", "main", "2", "t0.6-n8", "pass@8", "36.7%", "164"],
        ["gsm8k", "main", "-1", "greedy", "pass@1", "100.0%", "3"]]
