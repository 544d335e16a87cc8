"""`garo simulate` end to end: table, --json, a sweep in processes, --target-p95's diff, --report's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaler.cli import main
from scaler.history.record import write_records
from scaler.simulate.cli import ProgressLines
from tests.simkit import STACK_TEXT, job, latency_override


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    stack = tmp_path / "Pulumi.eng.yaml"
    stack.write_text(STACK_TEXT)
    history = tmp_path / "jobs.jsonl"
    with history.open("w") as out:
        # Every 5 minutes a job of 2 minutes: without a warm VM each waits for a create and a boot.
        write_records(out, [job(70_000 + i, 300.0 * i, 120.0) for i in range(24)])
    return stack, history, latency_override(tmp_path, create=20.0, boot=10.0)


def test_one_configuration_prints_the_table_and_json(tmp_path: Path) -> None:
    stack, history, latency = _inputs(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(main, ["simulate", "--history", str(history), "--latency", str(latency), str(stack)])
    assert shown.exit_code == 0, shown.output
    assert "small" in shown.output and "total" in shown.output and "JIT budget" in shown.output
    out = runner.invoke(main, ["simulate", "--history", str(history), "--latency", str(latency), "--json", str(stack)])
    data = json.loads(out.stdout)
    (config,) = data["configurations"]
    assert config["total"]["jobs"] == 24
    assert config["total"]["wait_p50"] == 30.0  # create 20 s + boot 10 s, start-up 0
    assert config["total"]["vm_minutes"] > config["total"]["job_minutes"] == 48.0
    assert config["cloud_calls"]["create"] >= 24 and config["github_calls"]["generate_jit_config"] == 24


def test_a_sweep_finds_the_cheapest_pool_meeting_the_target_and_prints_the_diff(tmp_path: Path) -> None:
    stack, history, latency = _inputs(tmp_path)
    report = tmp_path / "report"
    args = ["simulate", "--history", str(history), "--latency", str(latency), str(stack), "--workers", "2"]
    args += ["--set", "garo:groups[small].warmPool.size=0,1,2", "--target-p95", "5s", "--report", str(report)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "Pareto front" in out.output
    assert "cheapest configuration with p95 <= 5s: garo:groups[small].warmPool.size=1" in out.output
    assert "-        size: 0   # none yet\n+        size: 1   # none yet" in out.output
    assert {p.name for p in report.iterdir()} == {"figures.json", "wait-vs-vms.png", "cost-vs-p95.png", "stack.diff"}
    data = json.loads((report / "figures.json").read_text())
    assert data["chosen"] == "garo:groups[small].warmPool.size=1"
    costs = [c["total"]["cost"] for c in data["configurations"]]
    assert costs == sorted(costs)  # a bigger pool costs more
    assert (report / "wait-vs-vms.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unreachable_target_exits_1_and_says_the_best(tmp_path: Path) -> None:
    stack, history, latency = _inputs(tmp_path)
    args = ["simulate", "--history", str(history), "--latency", str(latency), str(stack), "--target-p95", "5s"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1
    assert "no configuration meets p95 <= 5s; the lowest p95 is 30s" in out.output


def test_bad_set_and_bad_target_exit_2_before_simulating(tmp_path: Path) -> None:
    stack, history, _ = _inputs(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(main, ["simulate", "--history", str(history), str(stack), "--set", "garo:groups[9].max=3"])
    assert bad.exit_code == 2
    assert "garo:groups[9]: the list has 2 entries" in bad.output
    invalid = runner.invoke(main, ["simulate", "--history", str(history), str(stack), "--set", "garo:groups[0].max=0"])
    assert invalid.exit_code == 2 and "garo:groups[0].max" in invalid.output
    target = runner.invoke(main, ["simulate", "--history", str(history), str(stack), "--target-p95", "soon"])
    assert target.exit_code == 2 and "--target-p95" in target.output
    assert stack.read_text() == STACK_TEXT


def test_a_region_without_prices_is_refused_with_the_way_out(tmp_path: Path) -> None:
    stack, history, _ = _inputs(tmp_path)
    stack.write_text(STACK_TEXT.replace("us-central1", "asia-east1"))
    out = CliRunner().invoke(main, ["simulate", "--history", str(history), str(stack)])
    assert out.exit_code == 2
    assert "no gce price for e2-standard-4 in asia-east1" in out.output and "--prices FILE" in out.output


def test_a_long_history_runs_in_pieces_at_its_quiet_gap_unless_asked_for_one_whole_run(tmp_path: Path) -> None:
    stack, history, latency = _inputs(tmp_path)
    with history.open("w") as out:  # two days of 2,000 one-minute jobs each, a quiet night between them
        write_records(out, [job(80_000 + i, 86_400.0 * (i // 2000) + 15.0 * (i % 2000), 60.0) for i in range(4000)])
    args = ["simulate", "--history", str(history), "--latency", str(latency), str(stack), "--json"]
    runner = CliRunner()
    pieces = json.loads(runner.invoke(main, [*args, "--workers", "2"]).stdout)["configurations"][0]
    whole = json.loads(runner.invoke(main, [*args, "--whole"]).stdout)["configurations"][0]
    assert (pieces["pieces"], whole["pieces"]) == (2, 1)
    assert pieces["total"]["jobs"] == whole["total"]["jobs"] == 4000
    assert pieces["total"]["never_started"] == whole["total"]["never_started"] == 0
    # A cloud of fixed latencies and the night in between: the pieces' figures are the whole run's.
    for figure in ("wait_p50", "wait_p95", "wait_max", "vm_minutes", "job_minutes", "vms_created"):
        assert pieces["total"][figure] == pytest.approx(whole["total"][figure]), figure


def test_a_swept_configuration_runs_in_pieces_with_the_figures_it_has_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each configuration's pieces are tasks of one pool; the sweep still reports, for each, what
    # simulating that configuration by itself reports.
    stack, history, latency = _inputs(tmp_path)
    with history.open("w") as out:  # two days of 2,000 one-minute jobs each, a quiet night between them
        write_records(out, [job(80_000 + i, 86_400.0 * (i // 2000) + 15.0 * (i % 2000), 60.0) for i in range(4000)])
    args = ["simulate", "--history", str(history), "--latency", str(latency), str(stack), "--json", "--workers", "2"]
    option = "garo:groups[small].warmPool.size"
    runner = CliRunner()
    monkeypatch.setattr(ProgressLines, "every", 0.0)
    sweep = runner.invoke(main, [*args, "--set", f"{option}=0,2"])
    assert sweep.stderr.splitlines() == [
        "simulating 2 configurations in parallel processes...",
        *(f"simulated {done:,} of 8,000 jobs ({done // 80}%)" for done in (2000, 4000, 6000)),
    ]
    swept = json.loads(sweep.stdout)["configurations"]
    alone = json.loads(runner.invoke(main, [*args, "--set", f"{option}=2"]).stdout)["configurations"]
    assert [c["pieces"] for c in swept] == [2, 2] and alone[0]["pieces"] == 2
    assert swept[1]["total"] == alone[0]["total"] and swept[1]["cloud_calls"] == alone[0]["cloud_calls"]
    assert swept[0]["total"]["cost"] < swept[1]["total"]["cost"]  # the pool of 2 costs, and is counted once


def test_a_long_simulation_says_how_far_it_is_on_stderr_and_keeps_stdout_for_the_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ProgressLines, "every", 0.0)  # a line as each piece is done, not every few seconds
    stack, history, latency = _inputs(tmp_path)
    with history.open("w") as out:  # two days of 2,000 one-minute jobs each: two pieces
        write_records(out, [job(80_000 + i, 86_400.0 * (i // 2000) + 15.0 * (i % 2000), 60.0) for i in range(4000)])
    args = ["simulate", "--history", str(history), "--latency", str(latency), str(stack), "--json", "--workers", "2"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert out.stderr == "simulated 2,000 of 4,000 jobs (50%)\n"  # not when all are done: the figures say so
    assert json.loads(out.stdout)["configurations"][0]["total"]["jobs"] == 4000
