"""Reading a user's own rating table as written: the delimiter and the header are found (comma, tab, semicolon,
``::``, whitespace; MovieLens ``u.data`` and ``ratings.dat``, RecBole ``.inter``), ``--sep`` and ``--no-header``
override them, and an unrecognised header is one line naming the columns found and ``--columns``."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.api import Recommender
from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.delimited import looks_like_header, parse_sep, sniff_sep
from recsys.data.tables import read_rating_table
from recsys.errors import UserError

#: (user, item, score, timestamp) of the fixtures, as MovieLens writes them
ROWS = [(196, 242, 3, 881250949), (186, 302, 3, 891717742), (22, 377, 1, 878887116), (244, 51, 2, 880606923),
        (166, 346, 1, 886397596), (298, 474, 4, 884182806)]  # fmt: skip


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_columns(table):
    """The table's (user, item, score) columns as plain lists, for comparison with ROWS."""
    return list(
        zip(table["user_id"].tolist(), table["item_id"].tolist(), table["score"].tolist(), strict=True)
    )


EXPECTED = [(u, i, s) for u, i, s, _ in ROWS]


@pytest.mark.parametrize(
    ("name", "header", "sep", "four"),
    [
        ("u.data", None, "\t", True),  # MovieLens-100k: tab, no header
        ("ratings.dat", None, "::", True),  # MovieLens-1M: '::', no header
        ("plain.csv", "user_id,item_id,score", ",", False),
        ("semi.csv", "user_id;item_id;score;timestamp", ";", True),
        ("spaces.txt", None, "   ", False),
        ("pipes.txt", "user_id|item_id|score", "|", False),
    ],
)
def test_each_format_reads_with_zero_flags(tmp_path, capsys, name, header, sep, four):
    lines = [sep.join(map(str, row if four else row[:3])) for row in ROWS]
    path = write(tmp_path / name, ([header] if header else []) + lines)
    table = read_rating_table(path)
    assert expected_columns(table) == EXPECTED
    assert ("timestamp" in table.columns) == four
    notes = capsys.readouterr().err
    if header is None:  # one line says the columns were read by position
        position = "user_id, item_id, score, timestamp" if four else "user_id, item_id, score"
        assert notes.strip() == (
            f"{name}: no header line; columns read by position as {position} (add a header or pass --columns if "
            "that is wrong)"
        )
    else:
        assert notes == ""


def test_recbole_and_movielens_headers_name_their_columns(tmp_path, capsys):
    inter = write(tmp_path / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
                  + ["\t".join(map(str, r)) for r in ROWS])  # fmt: skip
    assert expected_columns(read_rating_table(inter)) == EXPECTED
    assert capsys.readouterr().err.strip() == "ml.inter: read column(s) rating as score"
    latest = write(
        tmp_path / "ratings.csv", ["userId,movieId,rating,timestamp"] + [",".join(map(str, r)) for r in ROWS]
    )
    assert expected_columns(read_rating_table(latest)) == EXPECTED
    assert capsys.readouterr().err.strip() == (
        "ratings.csv: read column(s) userId as user_id, movieId as item_id, rating as score"
    )


def test_an_unrecognised_header_lists_its_columns_and_the_mapping_flag(tmp_path):
    path = write(tmp_path / "own.csv", ["person,film,stars"] + [",".join(map(str, r[:3])) for r in ROWS])
    with pytest.raises(UserError) as err:
        read_rating_table(path)
    message = str(err.value)
    assert "\n" not in message
    assert "lacks column(s) user_id, item_id, score (it has person, film, stars)" in message
    assert message.endswith("--columns user=COLUMN,item=COLUMN,score=COLUMN")
    table = read_rating_table(path, columns={"user_id": "person", "item_id": "film", "score": "stars"})
    assert expected_columns(table) == EXPECTED


def test_sep_and_no_header_override_the_sniffing(tmp_path, capsys):
    # ids that look like a header to the sniffer: the first row is not numeric where the others are
    path = write(tmp_path / "odd.txt", ["a;b;c"] + [";".join(map(str, r[:3])) for r in ROWS])
    assert list(read_rating_table(path, columns={"user_id": "a", "item_id": "b", "score": "c"}).columns) == [
        "user_id", "item_id", "score"]  # fmt: skip
    table = read_rating_table(path, header=False)
    assert table["user_id"].tolist()[0] == "a" and len(table) == len(ROWS) + 1
    with pytest.raises(UserError, match="1 column"):  # split on commas, each line is one field
        read_rating_table(path, sep=",")
    capsys.readouterr()


def test_sniffing_rules_by_hand():
    assert sniff_sep(["1::2::3::4", "5::6::7::8"]) == "::"
    assert sniff_sep(["1\t2\t3", "4\t5\t6"]) == "\t"
    assert sniff_sep(['"a,b",2,3', "c,4,5"]) == ","  # a quoted comma is part of its field
    assert sniff_sep(["1 2  3", "4\t5 6"]) == "whitespace"
    assert sniff_sep(["just-one-field", "another"]) is None
    assert looks_like_header([["uid", "iid", "stars"], ["1", "2", "3"]], set())  # 'stars' above numbers
    assert not looks_like_header([["u1", "i1", "4"], ["u2", "i9", "5"]], set())  # strings ids, numeric scores
    assert looks_like_header([["score", "x"], ["score", "x"]], {"score"})  # a known column name
    assert parse_sep("tab") == "\t" and parse_sep("::") == "::" and parse_sep(None) is None
    with pytest.raises(UserError, match="--sep"):
        parse_sep("x")


def test_bad_delimited_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="empty"):
        read_rating_table(write(tmp_path / "empty.csv", []))
    with pytest.raises(UserError, match="2 column.s. and no header"):
        read_rating_table(write(tmp_path / "two.csv", ["1,2", "3,4"]))
    with pytest.raises(UserError, match="cannot tell the delimiter"):
        read_rating_table(write(tmp_path / "ragged.csv", ["1,2,3", "4;5"]))
    with pytest.raises(UserError, match="not to Parquet"):
        read_rating_table(tmp_path / "r.parquet", sep=",")


def test_u_data_from_the_command_line_and_the_facade(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t{880000000 + u * 100 + i}" for u in range(1, 41)
             for i in rng.choice(np.arange(1, 61), 12, replace=False)]  # fmt: skip
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    write(folder / "u.data", lines)
    assert main(["data", "validate", str(folder)]) == 0  # the folder's u.data, zero flags
    captured = capsys.readouterr()
    assert "no problems found" in captured.out and "columns read by position" in captured.err
    ds = load_dataset(folder / "u.data")
    assert ds.n_users == 40 and ds.user_ids.dtype == np.int64 and ds.score_range == (1.0, 5.0)
    comma = write(tmp_path / "comma.txt", [line.replace("\t", ",") for line in lines])
    assert main(["data", "validate", str(comma), "--sep", ",", "--no-header", "--json"]) == 0
    rec = Recommender.load_data(comma, sep="comma", header=False, holdout="random:0.2")
    same = load_dataset(folder / "u.data", holdout="random:0.2")
    for split, ratings in same.ratings.items():  # the same table, read from either file, splits alike
        np.testing.assert_array_equal(rec.dataset.ratings[split].score, ratings.score)
    pairs = write(tmp_path / "pairs.csv", ["user_id,item_a,item_b,choice", "u1,a,b,a", "u2,a,b,b"])
    with pytest.raises(UserError, match="--sep applies to rating tables only"):
        load_dataset(pairs, sep=",")
