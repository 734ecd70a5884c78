"""The taste atlas: a model's taste groups as one self-contained HTML page (``recsys atlas``).

Groups of the fitted users (``form_groups``): for a model with taste prototypes (``two_tower``) each user's
group is the prototype with the largest weight in their mixture; for any other model with taste vectors, a
seeded k-means of the L2-normalised user vectors. Empty groups are dropped; the largest group comes first. For
each group the page shows its members, its demographic make-up (``composition``), the images it likes most and
least compared with the consensus (``likes``: the members' mean observed score of an image minus the mean of
every fitted user, over the images the members rated at least ``min_ratings`` times; with ``thumbnails`` of the
image files that can be read, embedded in the page), and every user on a 2-D map (``map_coordinates``: the
first two principal components of the vectors the groups were formed from).

The page (``render_html``, from the Jinja2 template ``recsys/report/templates/atlas.html.j2``, autoescaped) has
inline CSS, an inline SVG and a tiny inline script that marks the page as loaded (``data-ok``, ``data-groups``)
and records script errors (``data-errors``); it references nothing outside itself. Every string from the data is
escaped.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset, Ratings
from recsys.errors import UserError
from recsys.models.base import Model

#: image metadata columns shown beside an image id, when the dataset has them
IMAGE_COLUMNS = ("prompt", "type", "group", "style")
#: group colours (colour-blind friendly qualitative palette), reused in turn past the tenth group
PALETTE = (
    "#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee",
    "#aa3377", "#bbbbbb", "#332288", "#117733", "#882255",
)  # fmt: skip
#: the most categories listed per demographic column and group; the rest are summed as "other"
MAX_CATEGORIES = 8
#: the longest side (pixels) of the thumbnails shown beside the images a group likes most and least
THUMBNAIL = 64


@dataclass
class Groups:
    """The fitted users (``users``: user_idx), their group (``labels``: 0..n-1, none empty), each group's name,
    the vectors the groups were formed from (rows aligned to ``users``) and how they were formed."""

    users: np.ndarray
    labels: np.ndarray
    names: list[str]
    vectors: np.ndarray
    method: str
    #: True when the groups are the model's prototypes (``--groups`` then has no say)
    by_prototype: bool = False

    @property
    def n_groups(self) -> int:
        return len(self.names)

    def members(self, group: int) -> np.ndarray:
        """The user_idx of a group's members."""
        return self.users[self.labels == group]


def _relabel(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 0..n-1 over the non-empty groups, largest group first (equal sizes in label order),
    and the original label of each."""
    present, inverse, sizes = np.unique(raw, return_inverse=True, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse].astype(np.int64), present[order]


def kmeans_labels(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Seeded k-means (scikit-learn, 10 initialisations) of the L2-normalised rows of ``vectors``."""
    from sklearn.cluster import KMeans

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(unit.astype(np.float64))


def prototype_mixture(model: Model, users: np.ndarray) -> np.ndarray | None:
    """The model's prototype mixture weights of ``users`` (n x prototypes), or None without prototypes."""
    mixture = getattr(model, "prototype_mixture", None)
    if mixture is None:
        return None
    try:
        return mixture(users)
    except ValueError:  # built without prototypes
        return None


def check_taste_model(name: str) -> None:
    """A one-line ``UserError`` when the registered model ``name`` has no taste vectors, naming those that do."""
    from recsys.models.registry import list_models, model_class, unavailable_reason

    if not model_class(name).has_taste_vectors():
        runnable = [m for m in list_models() if unavailable_reason(m) is None]  # not those of missing extras
        with_vectors = [m for m in runnable if model_class(m).has_taste_vectors()]
        raise UserError(f"{name} has no taste vectors; the atlas needs one of: {', '.join(with_vectors)}")


def form_groups(model: Model, dataset: Dataset, k: int = 6, seed: int = 0) -> Groups:
    """The taste groups of the dataset's fitted users (see the module's docstring)."""
    check_taste_model(model.name)
    if k < 2:
        raise UserError(f"--groups must be at least 2, got {k}")
    users = dataset.train_users()
    vectors = model.user_vectors()[users].astype(np.float64)
    mixture = prototype_mixture(model, users)
    if mixture is not None:
        labels, kept = _relabel(mixture.argmax(axis=1))
        names = [f"prototype {p}" for p in kept]
        method = (
            f"each user's group is the prototype with the largest weight in their mixture "
            f"({mixture.shape[1]} prototypes, {len(kept)} with members)"
        )
        return Groups(users, labels, names, vectors, method, by_prototype=True)
    if k > len(users):
        raise UserError(f"--groups {k} is more than the {len(users)} fitted users of {dataset.name}")
    labels, kept = _relabel(kmeans_labels(vectors, k, seed))
    names = [f"group {g + 1}" for g in range(len(kept))]
    method = f"k-means (seed {seed}) of the L2-normalised user vectors into {k} groups"
    return Groups(users, labels, names, vectors, method)


def composition(dataset: Dataset, groups: Groups) -> list[dict[str, pd.DataFrame]]:
    """Per group, per demographic column of ``dataset.users``: a table (category, share, overall) of the shares
    of each category among the group's members and among all fitted users, largest share first; a numeric
    column gives one row, its mean (category ``mean``). Missing values count as the category ``(missing)``."""
    table = dataset.users.iloc[groups.users].reset_index(drop=True)
    out: list[dict[str, pd.DataFrame]] = [{} for _ in range(groups.n_groups)]
    for column in table.columns:
        values = table[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if not numeric:
            values = values.astype(object).where(values.notna(), "(missing)").astype(str)
        overall = values.value_counts(normalize=True)
        for g in range(groups.n_groups):
            member = values[groups.labels == g]
            if numeric:
                rows = pd.DataFrame(
                    {"category": ["mean"], "share": [member.mean()], "overall": [values.mean()]}
                )
            else:
                shares = member.value_counts(normalize=True)
                rows = pd.DataFrame(
                    {
                        "category": shares.index,
                        "share": shares.to_numpy(),
                        "overall": overall[shares.index].to_numpy(),
                    }
                )
            out[g][str(column)] = rows.reset_index(drop=True)
    return out


def observed_ratings(dataset: Dataset, users: np.ndarray) -> Ratings:
    """Every observed rating (all splits) of ``users``."""
    ratings = Ratings.concat([dataset.ratings[s] for s in dataset.splits])
    return ratings.subset(np.isin(ratings.user_idx, users))


def likes(
    dataset: Dataset, groups: Groups, *, min_ratings: int = 3, top: int = 8
) -> list[dict[str, pd.DataFrame]]:
    """Per group, ``most`` and ``least``: the ``top`` images with the largest and smallest difference between
    the members' mean observed score and the mean of every fitted user, among the images the members rated at
    least ``min_ratings`` times (disjoint: with fewer than ``2 * top`` such images, the larger half goes to
    ``most``). Columns: image_idx, group_mean, all_mean, diff, n (the members' ratings).
    Ties are broken by image index. Without ratings (choices only) the tables are empty."""
    columns = ["image_idx", "group_mean", "all_mean", "diff", "n"]
    empty = pd.DataFrame(columns=columns)
    if not dataset.splits:
        return [{"most": empty, "least": empty} for _ in range(groups.n_groups)]
    ratings = observed_ratings(dataset, groups.users)
    group_of = np.full(dataset.n_users, -1, np.int64)
    group_of[groups.users] = groups.labels
    frame = pd.DataFrame(
        {
            "group": group_of[ratings.user_idx],
            "image_idx": ratings.image_idx,
            "score": ratings.score.astype(np.float64),
        }
    )
    all_mean = frame.groupby("image_idx")["score"].mean()
    per_group = frame.groupby(["group", "image_idx"])["score"].agg(["mean", "size"]).reset_index()
    per_group = per_group[per_group["size"] >= min_ratings]
    out = []
    for g in range(groups.n_groups):
        rows = per_group[per_group["group"] == g]
        table = pd.DataFrame(
            {
                "image_idx": rows["image_idx"].to_numpy(),
                "group_mean": rows["mean"].to_numpy(),
                "all_mean": all_mean[rows["image_idx"]].to_numpy(),
                "n": rows["size"].to_numpy(),
            }
        )
        table["diff"] = table["group_mean"] - table["all_mean"]
        table = table[columns].sort_values("image_idx", kind="stable")
        # disjoint lists: with fewer than 2 * top images, the larger differences go to "most", the rest to "least"
        order = table.sort_values("diff", ascending=False, kind="stable")
        most = order.head(min(top, (len(order) + 1) // 2)).reset_index(drop=True)
        rest = table[~table["image_idx"].isin(most["image_idx"])]
        least = rest.sort_values("diff", kind="stable").head(min(top, len(order) // 2)).reset_index(drop=True)
        out.append({"most": most, "least": least})
    return out


def thumbnails(dataset: Dataset, image_idx: Iterable[int], size: int = THUMBNAIL) -> dict[int, str]:
    """``data:`` URIs (JPEG, at most ``size`` pixels a side) of the images ``image_idx`` whose file (the images
    table's ``path``, as PAMELA and the simulator give it) can be read as an image; the others are left out. An
    image refused by ``recsys.data.images.open_image`` (a decompression bomb, a FIFO) is left out with one line
    on stderr naming it."""
    if "path" not in dataset.images.columns:
        return {}
    from recsys.data.images import open_image

    out = {}
    for image in sorted({int(i) for i in image_idx}):
        path = dataset.images["path"].iloc[image]
        if not isinstance(path, str) or not path:
            continue
        try:
            with open_image(path) as opened:
                small = opened.convert("RGB")
            small.thumbnail((size, size))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
        except UserError as err:
            print(f"warning: {err}; shown without a thumbnail", file=sys.stderr)
            continue
        except (OSError, ValueError):  # missing, unreadable or not an image: shown without a thumbnail
            continue
        out[image] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return out


def map_coordinates(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (n x 2) of ``vectors`` (numpy SVD of the centred rows); each axis'
    sign makes its largest loading positive; a zero column where the vectors have fewer than two dimensions."""
    centred = np.asarray(vectors, np.float64) - np.asarray(vectors, np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    coords = centred @ axes.T
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return coords


@dataclass
class Atlas:
    """Everything the page shows."""

    dataset: str
    simulated: bool
    model: str
    params: dict
    groups: Groups
    user_ids: list[str]
    composition: list[dict[str, pd.DataFrame]]
    likes: list[dict[str, pd.DataFrame]]
    coords: np.ndarray
    images: pd.DataFrame = field(repr=False)
    image_ids: np.ndarray = field(repr=False)
    min_ratings: int = 3
    #: image_idx -> ``data:`` URI of its thumbnail (``thumbnails``), for the images listed in ``likes``
    thumbnails: dict[int, str] = field(default_factory=dict, repr=False)


def build_atlas(
    model: Model, dataset: Dataset, *, k: int = 6, seed: int = 0, min_ratings: int = 3, top: int = 8
) -> Atlas:
    """The atlas of a fitted model on the dataset it was fitted on."""
    groups = form_groups(model, dataset, k, seed)
    liked = likes(dataset, groups, min_ratings=min_ratings, top=top)
    listed = [i for tables in liked for table in tables.values() for i in table["image_idx"]]
    return Atlas(
        dataset=dataset.name,
        simulated=dataset.simulated,
        model=model.name,
        params=model.get_params(),
        groups=groups,
        user_ids=[str(u) for u in dataset.user_ids[groups.users]],
        composition=composition(dataset, groups),
        likes=liked,
        coords=map_coordinates(groups.vectors),
        images=dataset.images,
        image_ids=dataset.image_ids,
        min_ratings=min_ratings,
        thumbnails=thumbnails(dataset, listed),
    )


# ---------------------------------------------------------------------- HTML
def colour(group: int) -> str:
    return PALETTE[group % len(PALETTE)]


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}.sim{background:#c62828;color:#fff;padding:2px 8px;border-radius:4px;
font-size:.8em;vertical-align:middle}.meta{color:#555;font-size:.9em;margin:2px 0}
section.group{border-top:3px solid var(--c);margin-top:28px;padding-top:4px}
section.group h2{font-size:1.2em}.swatch{display:inline-block;width:12px;height:12px;border-radius:50%;
background:var(--c);margin-right:6px}
table{border-collapse:collapse;font-size:.85em;margin:6px 0 12px}td,th{padding:2px 8px;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:18px}.cols>div{flex:1 1 300px;min-width:0}
.bar{display:inline-block;height:9px;background:var(--c);vertical-align:middle}
td.prompt{max-width:300px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.pos{color:#1b5e20}.neg{color:#b71c1c}details{margin:6px 0}.ids{font-size:.8em;color:#444;word-break:break-all}
svg text{font-size:12px}img.thumb{display:block;max-width:64px;max-height:64px;border-radius:3px}
"""

SCRIPT = """
window.onerror=function(m){var b=document.body;b.dataset.errors=(b.dataset.errors||'')+m+';';};
window.addEventListener('load',function(){var b=document.body;
b.dataset.groups=String(document.querySelectorAll('section.group').length);
b.dataset.users=String(document.querySelectorAll('svg.map circle.user').length);b.dataset.ok='1';});
"""


def _map(atlas: Atlas, width: int = 720, height: int = 480) -> dict:
    """The map's geometry: each user's point (scaled into the plot), the legend's entries."""
    groups, coords = atlas.groups, atlas.coords
    pad, legend = 24, 150
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    plot_w, plot_h = width - legend - 2 * pad, height - 2 * pad
    xs = pad + (coords[:, 0] - low[0]) / span[0] * plot_w
    ys = pad + (1 - (coords[:, 1] - low[1]) / span[1]) * plot_h
    points = [
        {"x": float(x), "y": float(y), "colour": colour(int(g)), "user": uid, "group": groups.names[g]}
        for x, y, g, uid in zip(xs, ys, groups.labels, atlas.user_ids, strict=True)
    ]
    entries = [
        {"y": pad + 20 * g, "colour": colour(g), "name": name, "size": int((groups.labels == g).sum())}
        for g, name in enumerate(groups.names)
    ]
    return {
        "width": width,
        "height": height,
        "pad": pad,
        "legend": legend,
        "points": points,
        "groups": entries,
    }


def _composition(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """Per demographic column, its rows as shown: shares in percent with a bar (``MAX_CATEGORIES`` categories,
    the rest summed as "other"), or a numeric column's mean."""
    out = []
    for column, table in tables.items():
        rows = []
        if list(table["category"]) == ["mean"]:
            share, overall = table["share"].iloc[0], table["overall"].iloc[0]
            rows.append(
                {"category": "mean", "share": f"{share:.1f}", "overall": f"{overall:.1f}", "bar": None}
            )
        else:
            for category, share, overall in table.head(MAX_CATEGORIES).itertuples(index=False):
                bar = f"{share * 60:.0f}"
                rows.append(
                    {"category": category, "share": f"{share:.0%}", "overall": f"{overall:.0%}", "bar": bar}
                )
            rest = table.iloc[MAX_CATEGORIES:]
            if len(rest):
                rows.append(
                    {
                        "category": f"other ({len(rest)})",
                        "share": f"{rest['share'].sum():.0%}",
                        "overall": f"{rest['overall'].sum():.0%}",
                        "bar": None,
                    }
                )
        out.append({"column": column, "rows": rows})
    return out


def _likes(atlas: Atlas, table: pd.DataFrame, title: str) -> dict:
    """One likes table as shown: image id, its metadata, thumbnail, difference and means."""
    meta = [c for c in IMAGE_COLUMNS if c in atlas.images.columns]
    rows = []
    for row in table.itertuples(index=False):
        image = int(row.image_idx)
        values = ["" if pd.isna(v) else v for v in (atlas.images[c].iloc[image] for c in meta)]
        rows.append(
            {
                "image": atlas.image_ids[image],
                "thumbnail": atlas.thumbnails.get(image),
                "meta": list(zip(meta, values, strict=True)),
                "sign": "pos" if row.diff >= 0 else "neg",
                "diff": f"{row.diff:+.2f}",
                "group_mean": f"{row.group_mean:.2f}",
                "all_mean": f"{row.all_mean:.2f}",
                "n": int(row.n),
            }
        )
    return {"title": title, "rows": rows}


def render_html(atlas: Atlas) -> str:
    """The whole page (see the module's docstring), from the template ``atlas.html.j2`` (autoescaped)."""
    from markupsafe import Markup

    from recsys.report.templating import render

    groups = atlas.groups
    sections = []
    for g, name in enumerate(groups.names):
        member = groups.labels == g
        ids = [u for u, m in zip(atlas.user_ids, member, strict=True) if m]
        sections.append(
            {
                "index": g,
                "name": name,
                "colour": colour(g),
                "members": ids,
                "share": len(ids) / len(atlas.user_ids),
                "composition": _composition(atlas.composition[g]),
                "likes": [
                    _likes(atlas, atlas.likes[g]["most"], "Liked more than the consensus"),
                    _likes(atlas, atlas.likes[g]["least"], "Liked less than the consensus"),
                ],
            }
        )
    return render(
        "atlas.html.j2",
        style=Markup(STYLE),  # constants of this module, not data
        script=Markup(SCRIPT),
        model=atlas.model,
        dataset=atlas.dataset,
        simulated=atlas.simulated,
        params=json.dumps(atlas.params, sort_keys=True, default=str),
        method=groups.method,
        n_users=len(atlas.user_ids),
        n_groups=groups.n_groups,
        min_ratings=atlas.min_ratings,
        map=_map(atlas),
        sections=sections,
        thumbnails=bool(atlas.thumbnails),
        image_columns=[c for c in IMAGE_COLUMNS if c in atlas.images.columns],
    )
