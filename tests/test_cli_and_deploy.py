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


def test_sweep_list_names_every_cell(capsys):
    assert main(["sweep", str(REPO / "configs" / "sweeps" / "nightly_tiny.yaml"), "--list"]) == 0
    out = capsys.readouterr().out
    assert "[sweep nightly-tiny 4/4] mel_code seed=1" in out and "report: reports/nightly-tiny/report.md" in out
