"""The taste atlas: groups, demographic shares, likes and the map checked against independent computations;
the page parsed, self-contained, and rendered without errors by a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from recsys.atlas import THUMBNAIL, build_atlas, form_groups, map_coordinates, render_html, thumbnails
from recsys.cli import main
from recsys.data import load_dataset
from recsys.errors import UserError
from recsys.models.registry import create_model


@pytest.fixture(scope="module")
def mf(small_sim):
    return create_model("mf", factors=4, epochs=5).fit(small_sim)


@pytest.fixture(scope="module")
def atlas(mf, small_sim):
    return build_atlas(mf, small_sim, k=4, seed=1)


def test_kmeans_groups_match_sklearn_on_the_same_vectors(mf, small_sim, atlas):
    users = small_sim.train_users()
    vectors = mf.user_vectors()[users].astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = KMeans(n_clusters=4, n_init=10, random_state=1).fit_predict(unit)
    groups = atlas.groups
    assert np.array_equal(groups.users, users)
    # the same partition: each reference cluster is exactly one atlas group
    pairs = set(zip(reference.tolist(), groups.labels.tolist(), strict=True))
    assert len(pairs) == len(set(reference)) == groups.n_groups == 4
    assert not groups.by_prototype


def test_two_tower_group_is_the_argmax_of_its_prototype_mixture(small_sim):
    import torch

    model = create_model("two_tower", epochs=1, seed=0, n_prototypes=5).fit(small_sim)
    groups = form_groups(model, small_sim, k=3)
    users = small_sim.train_users()
    net = model.net_
    demo = model._cpu["demo"][torch.as_tensor(users)].numpy().astype(np.float64)
    logits = demo @ net.demo_logits.weight.detach().numpy().T + net.demo_logits.bias.detach().numpy()
    offsets = net.logit_offset.weight.detach().numpy()[users] * model.known_[users][:, None]
    main_prototype = (logits + offsets).argmax(axis=1)  # softmax keeps the order
    prototype_of = np.array([int(name.removeprefix("prototype ")) for name in groups.names])
    assert np.array_equal(prototype_of[groups.labels], main_prototype)
    assert sorted(prototype_of) == sorted(set(main_prototype))  # every non-empty prototype, once
    sizes = np.bincount(groups.labels)
    assert (np.diff(sizes) <= 0).all()  # largest group first
    assert "prototype" in groups.method and groups.by_prototype


def test_demographic_shares_equal_value_counts(small_sim, atlas):
    group = int(np.bincount(atlas.groups.labels).argmax())
    members = small_sim.users.iloc[atlas.groups.members(group)]
    for column in ("gender", "age_binned", "nationality"):
        expected = members[column].astype(str).value_counts(normalize=True)
        table = atlas.composition[group][column].set_index("category")["share"]
        assert table.to_dict() == pytest.approx(expected.to_dict())
    assert atlas.composition[group]["age"]["share"].iloc[0] == pytest.approx(members["age"].mean())


def test_top_liked_image_is_the_brute_force_one(small_sim, atlas):
    group = 0
    members = set(atlas.groups.members(group).tolist())
    fitted = set(atlas.groups.users.tolist())
    scores: dict[int, list[tuple[int, float]]] = {}
    for split in small_sim.splits:
        r = small_sim.ratings[split]
        for u, i, s in zip(r.user_idx.tolist(), r.image_idx.tolist(), r.score.tolist(), strict=True):
            if u in fitted:
                scores.setdefault(i, []).append((u, s))
    best, best_diff = None, -np.inf
    for image in sorted(scores):
        mine = [s for u, s in scores[image] if u in members]
        if len(mine) >= 3:
            diff = np.mean(mine) - np.mean([s for _, s in scores[image]])
            if diff > best_diff + 1e-12:
                best, best_diff = image, diff
    most = atlas.likes[group]["most"]
    assert int(most["image_idx"].iloc[0]) == best
    assert most["diff"].iloc[0] == pytest.approx(best_diff)
    assert len(most) == 8 and most["diff"].is_monotonic_decreasing
    least = atlas.likes[group]["least"]
    assert least["diff"].is_monotonic_increasing and not set(least["image_idx"]) & set(most["image_idx"])


def test_likes_lists_are_disjoint_when_few_images_qualify(small_sim, atlas):
    # a group of one member and top > the images it rated: every such image in one list, half in each
    from dataclasses import replace

    from recsys.atlas import likes

    groups = atlas.groups
    single = replace(groups, labels=np.where(np.arange(len(groups.users)) == 0, 0, 1), names=["a", "b"])
    few = likes(small_sim, single, min_ratings=1, top=1000)[0]
    user = groups.users[0]
    n_rated = len(np.unique(np.concatenate(
        [small_sim.ratings[s].image_idx[small_sim.ratings[s].user_idx == user] for s in small_sim.splits]
    )))  # fmt: skip
    assert len(few["most"]) + len(few["least"]) == n_rated and len(few["most"]) - len(few["least"]) in (0, 1)
    assert few["most"]["diff"].min() >= few["least"]["diff"].max()


def test_map_is_the_first_two_principal_components(atlas):
    vectors = atlas.groups.vectors
    coords = map_coordinates(vectors)
    centred = vectors - vectors.mean(axis=0)
    eigvals = np.sort(np.linalg.eigvalsh(np.cov(centred.T, bias=True)))[::-1]
    assert coords.var(axis=0) == pytest.approx(eigvals[:2], rel=1e-6)
    assert abs(np.corrcoef(coords.T)[0, 1]) < 1e-6


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections: list[int] = []
        self.circles = 0
        self.svgs = 0
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "group" in (attrs.get("class") or ""):
            self.sections.append(int(attrs["data-members"]))
        self.svgs += tag == "svg"
        self.circles += tag == "circle" and "user" in (attrs.get("class") or "")
        self.references += [attrs[k] for k in ("src", "href") if attrs.get(k)]


def test_the_page_parses_and_shows_every_group_and_user(atlas, small_sim):
    page = render_html(atlas)
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert len(parser.sections) == atlas.groups.n_groups
    assert sum(parser.sections) == len(small_sim.train_users())
    assert parser.svgs == 1
    assert parser.circles == len(small_sim.train_users())
    assert parser.references == [] and not re.search(r"https?://", page)  # nothing outside the page
    assert "SIMULATED" in page and small_sim.name in page


def _listed(atlas) -> list[int]:
    return sorted({int(i) for tables in atlas.likes for t in tables.values() for i in t["image_idx"]})


@pytest.fixture(scope="module")
def pictures(atlas, small_sim, tmp_path_factory):
    """``small_sim`` with an image file (120 x 80, a colour per image) for each image the atlas lists, but the
    first, whose file is not an image."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    paths = [None] * small_sim.n_images
    for n, image in enumerate(_listed(atlas)):
        paths[image] = str(folder / f"{image}.png")
        if n == 0:
            (folder / f"{image}.png").write_text("not a picture")
        else:
            Image.new("RGB", (120, 80), (image % 256, 40, 200)).save(paths[image])
    return replace(small_sim, images=small_sim.images.assign(path=paths))


def test_thumbnails_are_the_image_files_shrunk_and_embedded(mf, atlas, pictures):
    from PIL import Image

    listed = _listed(atlas)
    pictured = build_atlas(mf, pictures, k=4, seed=1)
    assert sorted(pictured.thumbnails) == listed[1:]  # the unreadable file is shown without a thumbnail
    for image, uri in pictured.thumbnails.items():
        shown = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert shown.size == (THUMBNAIL, round(THUMBNAIL * 80 / 120))
        colour = np.asarray(shown, float).reshape(-1, 3).mean(axis=0)
        assert colour == pytest.approx([image % 256, 40, 200], abs=4)  # the same picture, up to JPEG error
    parser = _Page()
    parser.feed(render_html(pictured))
    # still nothing outside the page: the thumbnails are data: URIs
    rows = [int(i) for tables in pictured.likes for t in tables.values() for i in t["image_idx"]]
    assert len(parser.references) == sum(
        i != listed[0] for i in rows
    )  # a row per listing, as many thumbnails
    assert all(r.startswith("data:image/jpeg;base64,") for r in parser.references)
    assert thumbnails(pictures, listed[:1]) == {}


def test_data_strings_are_escaped(atlas):
    atlas.user_ids[0] = '<script>alert("x")</script>'
    try:
        page = render_html(atlas)
    finally:
        atlas.user_ids[0] = "restored"
    assert (
        '<script>alert("x")' not in page and "&lt;script&gt;alert(&#34;x&#34;)" in page
    )  # markupsafe's &#34;


def test_cli_writes_the_atlas_and_a_browser_renders_it(small_sim_dir, tmp_path, capsys):
    out = tmp_path / "atlas.html"
    code = main(
        ["atlas", "--data", str(small_sim_dir), "--model", "mf", "--params", '{"factors": 4, "epochs": 5}',
         "--groups", "3", "--workspace", str(tmp_path / "ws"), "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and str(out) in capsys.readouterr().out
    page = out.read_text()
    parser = _Page()
    parser.feed(page)
    assert len(parser.sections) == 3
    assert not list(tmp_path.glob(".atlas.html.*"))  # no temporary file left
    again = ["atlas", "--data", str(small_sim_dir), "--model", "mf", "--workspace", str(tmp_path / "ws")]
    again += ["--out", str(out)]
    assert main(again) == 2 and "pass --overwrite" in capsys.readouterr().err  # refused before any fit
    assert out.read_text() == page
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH: the page was not rendered in a browser")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ok="1"' in body
    assert 'data-groups="3"' in body
    assert f'data-users="{len(load_dataset(small_sim_dir).train_users())}"' in body
    assert 'data-errors=""' in body
    shot = tmp_path / "atlas.png"
    subprocess.run(
        [*flags, "--window-size=1200,2000", f"--screenshot={shot}", out.as_uri()],
        capture_output=True, timeout=60, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1200) and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_the_browser_reports_script_errors(tmp_path):
    """The page's error hook is real: a page with a broken script shows its error in data-errors."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH")
    from recsys.atlas import SCRIPT

    broken = tmp_path / "broken.html"
    broken.write_text(
        f"<html><head><script>{SCRIPT}</script></head><body><script>nope(</script></body></html>"
    )
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", broken.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert re.search(r'data-errors="[^"]+"', dom)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "mf", "--groups", "0"], "--groups must be at least 2"),
        (["--model", "ridge"], "ridge has no taste vectors"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(small_sim_dir, tmp_path, capsys, argv, message):
    code = main(["atlas", "--data", str(small_sim_dir), "--workspace", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    if "ridge" in message:
        assert "mf" in err.split("needs one of:")[1]  # names the models that have taste vectors


def test_more_groups_than_users_is_a_user_error(mf, small_sim):
    with pytest.raises(UserError, match="more than the"):
        form_groups(mf, small_sim, k=len(small_sim.train_users()) + 1)


def test_composition_of_a_table_without_demographics(mf, small_sim):
    bare = replace(small_sim, users=pd.DataFrame(index=range(small_sim.n_users)))
    atlas = build_atlas(mf, bare, k=2)
    assert all(c == {} for c in atlas.composition)
    assert "no demographic columns" in render_html(atlas)
