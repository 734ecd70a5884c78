"""The report as a person reads it: Holm-corrected p-values recomputed from the per-user values, the model to
pick per task first, rows not measured in one line and out of the charts, a readable breakdown chart, the
HTML page self-contained and escaped (and rendered by headless Chromium when it is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from recsys.data import load_dataset
from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic
from recsys.leaderboard import run_leaderboard
from recsys.report import build_table, format_table, to_html, to_markdown, write_leaderboard

PICKAPIC = PickapicSimulationConfig(
    seed=1, users=40, prompts_per_user=20, detailed_images=False, image_size=16, feature_dim=16
)


@pytest.fixture(scope="module")
def board(small_sim):
    return run_leaderboard(
        small_sim, ["global_mean", "ridge", "mf", "oracle"], shots=(0, 2, 5), draws=2, jobs=1, progress=False
    )


def write_and_keep_figures(board, folder):
    """The board's set written into ``folder``, and every figure its charts saved, by file name (and under
    ``tables``, how many report tables the set was built from)."""
    import recsys.report.files as files

    saved, tables = {}, []
    original, build = Figure.savefig, files.build_table

    def savefig(self, path, *args, **kwargs):
        saved[getattr(path, "name", str(path))] = self
        return original(self, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", savefig)
        patch.setattr(files, "build_table", lambda b: tables.append(b) or build(b))
        paths = write_leaderboard(board, folder)
    return paths, saved | {"tables": len(tables)}


@pytest.fixture(scope="module")
def written(board, tmp_path_factory):
    return write_and_keep_figures(board, tmp_path_factory.mktemp("set") / "set")


@pytest.fixture(scope="module")
def choices_board(tmp_path_factory):
    folder = simulate_pickapic(tmp_path_factory.mktemp("pap") / "pickapic", PICKAPIC, progress=False)
    ds = load_dataset(folder, image_features=folder / "image_features.npz")
    return run_leaderboard(
        ds, ["global_mean", "ridge", "mf"], shots=(0, 1, 2), draws=1, jobs=1, progress=False
    )


def md_table(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The table under ``## heading``: model -> column -> cell."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {cells[0]: dict(zip(head, cells, strict=True)) for cells in rows}


def holm_by_hand(p: dict[str, float]) -> dict[str, float]:
    """Holm's step-down from its definition: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    order = sorted(p, key=p.get)
    out, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[name]))
        out[name] = running
    return out


def expected_tests(board, split, shots):
    """Best non-ceiling model by user SROCC and the Holm-adjusted Wilcoxon p-values of the others, by scipy."""
    rows = [
        r for r in board.rows if (r.split, r.shots) == (split, shots) and r.metrics and r.model != "oracle"
    ]
    best = max(rows, key=lambda r: r.metrics["user_srocc"])
    raw = {}
    for r in rows:
        if r is not best:
            users = sorted(set(best.per_user["user_srocc"]) & set(r.per_user["user_srocc"]))
            d = [best.per_user["user_srocc"][u] - r.per_user["user_srocc"][u] for u in users]
            raw[r.model] = scipy_stats.wilcoxon(d).pvalue
    return best, raw, holm_by_hand(raw)


def test_p_values_are_holm_corrected_everywhere(board, written):
    paths, _ = written
    markdown = paths["md"].read_text()
    statistics = json.loads(paths["json"].read_text())["statistics"]
    assert statistics["correction"] == "Holm, over the models of each task"
    csv = pd.read_csv(paths["csv"], dtype={"run_id": str})
    for split, shots in (("test_seen", None), ("test_unseen", 5)):
        best, raw, holm = expected_tests(board, split, shots)
        heading = split if shots is None else f"{split} ({shots}-shot)"
        table = md_table(markdown, heading)
        assert (
            table[best.model]["p (user_srocc)"] == "best" and table["oracle"]["p (user_srocc)"] == "ceiling"
        )
        assert (
            f"Holm-corrected over the {len(raw)} models of the task" in markdown.split(f"## {heading}\n")[1]
        )
        task = next(t for t in statistics["tasks"] if (t["split"], t["shots"]) == (split, shots))
        assert task["tests"]["against"] == best.model and task["tests"]["family"] == len(raw)
        for model in raw:
            assert table[model]["p (user_srocc)"] == f"{holm[model]:.2g}"
            assert table[model]["p raw"] == f"{raw[model]:.2g}"
            assert task["tests"]["p"][model]["holm"] == pytest.approx(holm[model])
            assert task["tests"]["p"][model]["raw"] == pytest.approx(raw[model])
            line = csv[(csv["model"] == model) & (csv["split"] == split)]
            line = line[line["shots"].isna()] if shots is None else line[line["shots"] == shots]
            assert line["p_vs_best_holm"].item() == pytest.approx(holm[model], rel=1e-5)
    assert "by_draw" in statistics and "each reference draw alone" in statistics["by_draw"]


def test_the_model_to_pick_comes_first_and_is_never_the_ceiling(board):
    text = format_table(board).splitlines()
    assert [line.split(" ")[0] for line in text[:3]] == ["dataset:", "run", "splits:"]  # the header, then:
    assert text[3].startswith("best per task by user_srocc; oracle, the ceiling, excluded")
    markdown = to_markdown(board)
    assert markdown.index("**Best per task**") < markdown.index("\n## ")
    for split, shots in (("test_seen", None), ("test_unseen", 0), ("test_unseen", 5)):
        best, raw, holm = expected_tests(board, split, shots)
        oracle = next(r for r in board.rows if r.model == "oracle" and (r.split, r.shots) == (split, shots))
        assert oracle.metrics["user_srocc"] > best.metrics["user_srocc"]  # the ceiling would have won
        label = split if shots is None else f"{split} ({shots}-shot)"
        values = {
            r.model: r.metrics["user_srocc"] for r in board.rows if (r.split, r.shots) == (split, shots)
        }
        runner = max(raw, key=values.get)
        line = next(line for line in text[4:8] if line.strip().startswith(label + ":"))  # 4 tasks
        assert line.split(":", 1)[1].split()[0] == best.model and f"next {runner}" in line
        assert f"p = {holm[runner]:.2g}" in line
        assert f"- {label}: **{best.model}** {best.metrics['user_srocc']:.3f}" in markdown


def test_unmeasured_rows_are_one_line_and_left_out_of_the_charts(choices_board, tmp_path):
    paths, figures = write_and_keep_figures(choices_board, tmp_path / "set")
    text = format_table(choices_board)
    collapsed = [line for line in text.splitlines() if "global_mean" in line or "ridge" in line]
    assert len(collapsed) == 1 and collapsed[0].startswith("unsupported (2): global_mean, ridge: learns from")
    markdown = paths["md"].read_text()
    assert "| ridge |" not in markdown and "| global_mean |" not in markdown
    assert (
        sum(line.startswith("- unsupported (2): global_mean, ridge") for line in markdown.splitlines()) == 1
    )
    bars = figures["leaderboard.png"].axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["mf", "oracle"]
    curve = figures["curve.png"].axes
    legend = [t.get_text() for ax in curve if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert sorted(name.split()[0] for name in legend) == ["mf", "oracle"] and not any(
        "nan" in t for t in legend
    )
    assert curve[0].get_xlabel() == "k (reference choices per new user)"
    for page in (text, markdown, paths["html"].read_text()):
        assert "reference ratings" not in page and "choices" in page


def test_the_breakdown_chart_gives_each_group_a_colour_and_each_model_a_row(written):
    paths, figures = written
    models = ["global_mean", "ridge", "mf", "oracle"]
    panels = [ax for ax in figures["breakdown.png"].axes if ax.get_title()]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == models
    for ax in panels:
        handles = ax.get_legend().legend_handles
        colours = [to_hex(h.get_facecolor()[0]) for h in handles]
        assert len(set(colours)) == len(colours) >= 2, ax.get_title()  # one distinct colour per group
    markdown, details = paths["md"].read_text(), paths["breakdown_md"].read_text()
    assert "<details>" not in markdown and "breakdown.md" in markdown
    table = pd.read_csv(paths["breakdown_csv"])
    first = table[(table["model"] == "mf") & (table["split"] == "test_seen")].iloc[0]
    cell = f"| {first['dimension']} | {first['group']} | {first['n_users']} | {first['user_srocc']:.3f} "
    assert cell in details.split("## mf\n")[1]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references: list[str] = []
        self.sections = 0
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.references += [attrs[k] for k in ("src", "href") if attrs.get(k)]
        self.sections += tag == "section"

    def handle_data(self, data):
        self.cells.append(data)


def test_the_html_page_is_self_contained_and_escapes_the_data(board, written):
    paths, _ = written
    page = paths["html"].read_text()
    parser = _Page()
    parser.feed(page)
    pngs = [p for p in paths.values() if p.suffix == ".png"]
    assert len(parser.references) == len(pngs) == 4
    assert all(r.startswith("data:image/png;base64,") for r in parser.references)
    assert not re.search(r"(src|href)=\"?https?:", page)
    assert parser.sections == len(build_table(board).tasks) and "Holm-corrected" in page
    best, raw, holm = expected_tests(board, "test_seen", None)
    assert f"{holm['ridge']:.2g}" in parser.cells
    # a reason from the data is escaped
    hostile = replace(board, rows=[*board.rows, replace(board.rows[0], model="x", metrics=None,
                                                           status="skipped", reason="<script>alert(1)</script>")])  # fmt: skip
    rendered = to_html(hostile)
    assert "<script>alert(1)" not in rendered and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH: the page was not rendered in a browser")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", paths["html"].as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ok="1"' in body and 'data-errors=""' in body
    assert f'data-tasks="{parser.sections}"' in body and f'data-figures="{len(pngs)}"' in body


def test_every_file_of_a_set_reads_one_report_table(board, written):
    paths, figures = written
    assert figures["tables"] == 1
    table = build_table(board)
    assert np.isfinite(table.frame["p_holm"]).sum() == sum(t.family for t in table.tests.values())


def test_rows_not_measured_group_by_reason_and_name_their_tasks(small_sim):
    from recsys.evaluation.evaluator import Result
    from recsys.leaderboard import Leaderboard

    def failed(model, split, shots, reason, status="unsupported"):
        return Result(model, split, shots, 0, 0, None, None, 0.0, 0.0, status=status, reason=reason)

    def measured(model, split, shots):
        return Result(model, split, shots, 5, 50, {"user_srocc": 0.5}, None, 0.0, 0.0)

    tasks = [("test_seen", None), ("test_unseen", 0), ("test_unseen", 5)]
    rows = [measured("mf", s, k) for s, k in tasks]
    rows += [
        failed(m, s, k, f"{m} learns from ratings only; X holds choices")
        for m in ("a", "b")
        for s, k in tasks
    ]
    rows += [measured("c", "test_seen", None)]
    rows += [failed("c", s, k, "c cannot score users it was not fitted on") for s, k in tasks[1:]]
    rows += [failed("d", s, k, "table has no image features", "skipped") for s, k in tasks]
    board = Leaderboard(small_sim, 0, (0, 5), rows=rows)
    found = [group.text() for group in build_table(board).not_measured()]
    assert found == [
        "unsupported (2): a, b: learns from ratings only; X holds choices",
        "unsupported on test_unseen (0-shot), test_unseen (5-shot) (1): c: cannot score users it was not fitted on",
        "skipped (1): d: table has no image features",
    ]
    text = format_table(board).splitlines()
    assert text[-3:] == found and sum(line.startswith("c ") for line in text) == 1  # c's one measured row
