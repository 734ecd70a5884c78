"""Numbers other papers report on other data, shown apart from the suite's measured rows.

They are never compared cell by cell with measured rows: the data, the users, the metric and the protocol all
differ. ``reported_table_markdown()`` is a separate, clearly labelled section that ``recsys leaderboard``
appends for PAMELA-format data only. Each row cites an arXiv id or a venue.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reported:
    method: str
    data: str
    metric: str
    setting: str
    value: str
    source: str


_PREFERTHINKER = "arXiv 2511.00609 (PreferThinker)"
_TASK_VECTOR = "arXiv 2407.07176 (task-vector PIAA, ECCV 2024)"
_SURVEY = "; figure from a survey table, not re-checked against the paper"

#: pairwise choice accuracy (%) as reported by PreferThinker for itself and the baselines it compares with
PAIRWISE: tuple[Reported, ...] = tuple(
    Reported(method, data, "pairwise choice accuracy (%)", setting, value, _PREFERTHINKER)
    for method, values in (
        ("PreferThinker (Qwen2.5-VL-7B)", ("96.6", "92.0", "96.4", "92.8", "65.7")),
        ("ViPer (8B)", ("92.4", "78.0", "93.4", "80.0", "62.2")),
    )
    for (data, setting), value in zip(
        (
            ("PreferThinker benchmark", "seen users, single preference"),
            ("PreferThinker benchmark", "seen users, multiple preferences"),
            ("PreferThinker benchmark", "unseen users, single preference"),
            ("PreferThinker benchmark", "unseen users, multiple preferences"),
            ("Pick-a-Pic", "-"),
        ),
        values,
        strict=True,
    )
) + (Reported("PAL (6M-parameter mixture of prototypes)", "Pick-a-Pic", "pairwise choice accuracy (%)", "-",
              "about 71", _PREFERTHINKER),)  # fmt: skip

#: per-user SROCC averaged over users, k reference images per new user
PIAA: tuple[Reported, ...] = tuple(
    Reported(method, data, "user SROCC", f"{shots}-shot", value, source)
    for method, data, ten, hundred, source in (
        ("PA-IAA", "FLICKR-AES", "0.543", "0.639", "IEEE TIP 2020" + _SURVEY),
        ("BLG-PIAA", "FLICKR-AES", "0.561", "0.669", "IEEE Trans. Cybernetics 2022" + _SURVEY),
        ("TAPP-PIAA", "FLICKR-AES", "0.591", "0.685", "venue not checked" + _SURVEY),
        ("task-vector PIAA", "FLICKR-AES", "0.668", "0.748", _TASK_VECTOR),
        ("task-vector PIAA", "REAL-CUR", "0.577", "0.621", _TASK_VECTOR),
    )
    for shots, value in ((10, ten), (100, hundred))
)

NOTES = (
    "Mo et al., arXiv 2508.08220 (Idefics2-8B with QLoRA, preference tokens, contrastive preference loss) "
    "report over 15% better preference-prediction accuracy than their baselines (a relative gain, no "
    "absolute number to tabulate).",
    "PAL (Chen et al., ICLR 2025), a mixture of prototypes over frozen CLIP embeddings, is the small-model peer "
    "of the two-tower with prototypes; its Pick-a-Pic figure is the one PreferThinker reports above.",
    "PAMELA's own predictor (arXiv 2604.07427): code and tables not public at the time of writing.",
)


def reported_rows() -> list[Reported]:
    return [*PAIRWISE, *PIAA]


def reported_table_markdown() -> str:
    """A Markdown section "As reported (not measured here)", to append after the measured tables."""
    lines = [
        "## As reported (not measured here)",
        "",
        "Numbers published by other authors, on other data, with other users, metrics and protocols. They are "
        "context only: not measured by this suite, not comparable cell by cell with the rows above, and never "
        "marked best.",
        "",
        "| method | data | metric | setting | reported | source |",
        "|---|---|---|---|---:|---|",
    ]
    for row in reported_rows():
        lines.append(
            f"| {row.method} | {row.data} | {row.metric} | {row.setting} | {row.value} | {row.source} |"
        )
    lines += ["", *(f"- {note}" for note in NOTES)]
    return "\n".join(lines) + "\n"
