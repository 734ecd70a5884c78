"""benchmarks/scale.py: the table of hand-written records, resuming from its ledger, and its memory readings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale(load_benchmark):
    return load_benchmark("scale")


def records() -> list[dict]:
    scores = {"test_seen": 0.7, "test_unseen@8": 0.65}
    oracle = {"test_seen": 0.81, "test_unseen@8": 0.82}
    return [
        {"choices": 1000, "step": "simulate", "wall_seconds": 12.4, "peak_gb": 1.44},
        {"choices": 1000, "step": "load", "seconds": 2.0, "peak_gb": 0.5, "loaded_choices": 1003},
        {"choices": 1000, "step": "mf", "fit_seconds": 9.6, "seconds": 11.0, "peak_gb": 2.0,
         "scores": {"mf": scores, "oracle": oracle}},
        {"choices": 1000, "step": "pal", "fit_seconds": 20.2, "seconds": 30.0, "peak_gb": 1.5,
         "scores": {"pal": scores | {"test_seen": 0.71}, "oracle": oracle}},
        {"choices": 1000, "step": "leaderboard", "wall_seconds": 35.0, "peak_gb": 1.0, "tree_gb": 3.26},
    ]  # fmt: skip


def test_the_table_sums_the_sequential_total_and_names_the_ceiling(scale):
    lines = scale.table(records(), ["mf", "pal"]).splitlines()
    assert lines[2] == "| 1,000 (1,003) | simulate | | 12 | 1.4 | | |"
    assert lines[3] == "| 1,000 (1,003) | load | | 2 | 0.5 | | |"
    assert lines[4] == "| 1,000 (1,003) | mf | 10 | 11 | 2.0 | 0.700 | 0.650 |"
    assert lines[5] == "| 1,000 (1,003) | pal | 20 | 30 | 1.5 | 0.710 | 0.650 |"
    assert lines[6] == "| 1,000 (1,003) | oracle (ceiling) | | | | 0.810 | 0.820 |"
    # 2 + 11 + 30 seconds, the larger of the two models' peaks
    assert lines[7] == "| 1,000 (1,003) | sequential total | | 43 | 2.0 | | |"
    assert lines[8].startswith(
        "| 1,000 (1,003) | `recsys leaderboard` (load, fit, evaluate, write) | | 35 | 3.3"
    )


def test_a_run_resumes_from_its_ledger_without_running_done_steps(scale, tmp_path, monkeypatch):
    done = records()
    (tmp_path / "scale.jsonl").write_text("".join(json.dumps(r) + "\n" for r in done))
    monkeypatch.setattr(scale, "_child", lambda *a: pytest.fail("a finished step ran again"))
    assert scale.measure(tmp_path, [1000], ["mf", "pal"], "float16") == done
    # a step the ledger lacks does run
    ran = []

    def child(command, log):
        ran.append(command)
        log.write_text('RESULT {"fit_seconds": 3.0, "seconds": 4.0, "scores": {}}\n')
        return 5.0, 0.1, 0.1, 0

    monkeypatch.setattr(scale, "_child", child)
    again = scale.measure(tmp_path, [1000], ["mf", "pal", "two_tower"], "float16")
    assert [c[-1] for c in ran] == ["two_tower"]
    assert again[-1] | {"wall_seconds": 5.0} == {"choices": 1000, "step": "two_tower", "wall_seconds": 5.0,
                                              "peak_gb": 0.1, "tree_gb": 0.1, "fit_seconds": 3.0,
                                              "seconds": 4.0, "scores": {}}  # fmt: skip
    assert len((tmp_path / "scale.jsonl").read_text().splitlines()) == len(done) + 1


def child_from_a_small_process(command: list[str], log: Path) -> tuple[float, float, float, int]:
    """``scale._child(command, log)`` run by a fresh interpreter, as the benchmark runs it (from its small
    orchestrating process): on Linux a child spawned by a large process (the test session) keeps that process's
    resident high-water mark through exec, so the reading is only the child's from a small parent."""
    driver = (
        "import importlib.util, json, pathlib, sys; "
        f"spec = importlib.util.spec_from_file_location('scale_benchmark', {str(SCRIPT)!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        f"print(json.dumps(m._child({command!r}, pathlib.Path({str(log)!r}))))"
    )
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, check=True)
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def test_peak_memory_of_a_child_and_of_its_descendants(tmp_path):
    hold = "import numpy, time; a = numpy.ones(40_000_000); time.sleep(3)"  # 0.30 GiB held for 3 s
    seconds, peak, tree, status = child_from_a_small_process([sys.executable, "-c", hold], tmp_path / "a.log")
    assert status == 0 and 0.29 < peak < 0.45 and tree >= peak
    # the child holds as much while a grandchild does: the peak of one process stays, the tree's is the sum
    nested = (
        "import numpy, subprocess, sys; a = numpy.ones(40_000_000); "
        f"subprocess.run([sys.executable, '-c', {hold!r}], check=True)"
    )
    seconds, peak, tree, status = child_from_a_small_process(
        [sys.executable, "-c", nested], tmp_path / "b.log"
    )
    assert status == 0 and 0.29 < peak < 0.45 and 0.58 < tree < 0.9
