"""The CLI documents itself and rejects bad configs before starting anything; deployments are discovered."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from cli.main import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["config", "--help"], ["sweep", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 0
    assert "usage: mel" in capsys.readouterr().out


def test_bad_override_is_a_clear_error_without_starting_prefect(capsys):
    code = main(["run", str(REPO / "configs" / "tiny.yaml"), "--set", "rollout.group_size=1"])
    assert code == 2
    assert "rollout.group_size: must be at least 2" in capsys.readouterr().err


def test_config_command_prints_hash(capsys):
    assert main(["config", str(REPO / "configs" / "tiny.yaml"), "--set", "run.steps=3"]) == 0
    out = capsys.readouterr().out
    assert "steps: 3" in out and "# config hash: " in out


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout and "config" in out.stdout


def test_deployments_are_discovered_from_flows():
    from deploy.deploy import build_deployments, discover_flows, project_deployments

    assert {"mel-train", "mel-step", "mel-sweep", "mel-eval", "mel-report"} <= set(discover_flows())
    deployments = {d.name: d for d in build_deployments()}
    assert set(deployments) == {"mel-train-deployment", "nightly-tiny", "weekly-seeds", "mel-eval-deployment",
                                "mel-report-deployment"}
    for spec in project_deployments():  # serve gives prefect.yaml's sweeps the same parameters and schedules
        served = deployments[spec["name"]]
        assert served.flow_name == "mel-sweep" and served.entrypoint == spec["entrypoint"]
        assert served.parameters == spec["parameters"]
        assert [s.schedule.cron for s in served.schedules] == [s["cron"] for s in spec["schedules"]]


def _request_fields() -> set[str]:
    import dataclasses

    from mel.eval.plan import EvalRequest

    return {f.name for f in dataclasses.fields(EvalRequest)}


def test_the_eval_flow_and_its_deployment_take_every_eval_request_field():
    import inspect

    from prefect.utilities.callables import parameter_schema

    from deploy.deploy import OVERRIDES, discover_flows

    flows = discover_flows()
    evaluate = flows["mel-eval"]
    assert set(inspect.signature(evaluate.fn).parameters) == _request_fields()
    assert set(parameter_schema(evaluate).properties) == _request_fields()  # what the deployment's UI form shows
    for name, settings in OVERRIDES.items():  # a default parameter of a deployment is one its flow takes
        assert set(settings.get("parameters", {})) <= set(inspect.signature(flows[name].fn).parameters), name


def test_the_eval_flow_hands_every_parameter_to_the_request(monkeypatch):
    import flows.evaluate
    from mel.eval.plan import EvalRequest

    values = {"target": "runs/x", "benchmarks": ["gsm8k"], "out": "ev", "limit": 3, "samples": 4, "temperature": 0.7,
              "ks": [2, 4], "max_new_tokens": 9, "steps": "final", "path": "g.jsonl", "data_root": "data",
              "samples_file": "s.jsonl", "config_path": "e.yaml", "fields": {"problem": "question", "answer": "a"},
              "kind": "math"}
    assert set(values) == _request_fields()
    seen = []

    class Planned(Exception):
        pass

    def plan(req):
        seen.append(req)
        raise Planned

    monkeypatch.setattr(flows.evaluate, "plan_cells", plan)
    with pytest.raises(Planned):
        flows.evaluate.evaluate.fn(**values)
    assert seen == [EvalRequest(target="runs/x", benchmarks=("gsm8k",), out="ev", limit=3, samples=4, temperature=0.7,
                                ks=(2, 4), max_new_tokens=9, steps="final", path="g.jsonl", data_root="data",
                                samples_file="s.jsonl", config_path="e.yaml",
                                fields=(("problem", "question"), ("answer", "a")), kind="math")]
    pairs = EvalRequest.from_params(**{**values, "fields": [["problem", "question"], ["answer", "a"]]})
    assert pairs == seen[0]  # [ours, theirs] pairs are the same mapping


def test_mel_eval_options_are_the_flows_parameters():
    from cli.eval import _flow_params

    args = build_parser().parse_args([
        "eval", "runs/x", "--benchmark", "gsm8k", "--limit", "3", "--samples", "4", "--temperature", "0.7", "--k", "2",
        "--k", "4", "--out", "ev", "--max-new-tokens", "9", "--steps", "final", "--path", "g.jsonl", "--data-root",
        "data", "--config", "e.yaml", "--samples-file", "s.jsonl", "--field", "problem=question", "--kind", "math"])
    params = _flow_params(args)
    assert set(params) == _request_fields()
    assert params == {"target": "runs/x", "benchmarks": ["gsm8k"], "out": "ev", "limit": 3, "samples": 4,
                      "temperature": 0.7, "ks": [2, 4], "max_new_tokens": 9, "steps": "final", "path": "g.jsonl",
                      "data_root": "data", "samples_file": "s.jsonl", "config_path": "e.yaml",
                      "fields": {"problem": "question"}, "kind": "math"}


def test_the_cli_defines_no_flow_of_its_own():
    """``mel eval`` runs the deployed ``mel-eval`` flow; a second flow in the CLI would drift from it."""
    for path in (REPO / "cli").rglob("*.py"):
        assert "@flow" not in path.read_text() and "mel-eval-cli" not in path.read_text(), path


def test_the_run_forms_choices_are_the_shipped_files() -> None:
    import typing

    from flows.params import SHIPPED_CONFIGS, SHIPPED_SWEEPS, BenchmarkName, MethodName
    from mel.eval.benchmarks import BENCHMARKS

    assert sorted(typing.get_args(BenchmarkName)) == sorted(BENCHMARKS.names())
    assert sorted(SHIPPED_CONFIGS) == sorted(f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))
    sweeps = (REPO / "configs" / "sweeps").glob("*.yaml")
    assert sorted(SHIPPED_SWEEPS) == sorted(f"configs/sweeps/{p.name}" for p in sweeps)
    assert sorted(typing.get_args(MethodName)) == sorted(p.stem for p in (REPO / "configs" / "methods").glob("*.yaml"))


def test_the_run_forms_are_typed_and_described() -> None:
    from prefect.utilities.callables import parameter_schema

    from deploy.deploy import OVERRIDES, discover_flows
    from flows.train import train

    props = parameter_schema(train).model_dump()["properties"]
    assert props["config_path"]["anyOf"] == [{"enum": ["configs/demo.yaml", "configs/tiny.yaml"], "type": "string"},
                                             {"type": "string"}]  # a choice, or any other path
    assert "mel_code" in props["method"]["anyOf"][0]["enum"]
    assert props["steps"]["anyOf"][0] == {"minimum": 1, "type": "integer"}
    for name, fl in discover_flows().items():
        if OVERRIDES.get(name, {}).get("skip"):
            continue
        props = parameter_schema(fl).model_dump()["properties"]
        missing = [p for p, schema in props.items() if not schema.get("description")]
        assert not missing, f"{name}: parameters without a description on the Run form: {missing}"


def test_sweep_list_names_every_cell(capsys):
    assert main(["sweep", str(REPO / "configs" / "sweeps" / "nightly_tiny.yaml"), "--list"]) == 0
    out = capsys.readouterr().out
    assert "[sweep nightly-tiny 4/4] mel_code seed=1" in out and "report: reports/nightly-tiny/report.md" in out
