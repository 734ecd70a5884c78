"""Reading found files: a FIFO or a folder where a file belongs is refused at once (never a hang), and JSON
nested beyond the limit is a ``json.JSONDecodeError`` naming where, never a RecursionError."""

from __future__ import annotations

import json
import os

import pytest

from recsys.errors import UserError
from recsys.files import (
    MAX_JSON_DEPTH,
    JSONDepthError,
    NotARegularFile,
    check_depth,
    json_depth,
    loads,
    read_json,
    read_text,
    regular_file,
)


def deep(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ("[]", 1), ("{}", 1), ('{"a": [1, {"b": []}]}', 4), (deep(7), 7), ('["[[[["]', 1)],
)
def test_depth_is_counted_by_hand(text, depth):
    assert json_depth(json.loads(text)) == depth


def test_json_at_the_limit_is_read_and_one_deeper_is_refused_with_its_position():
    assert loads(deep(MAX_JSON_DEPTH)) == json.loads(deep(MAX_JSON_DEPTH))
    with pytest.raises(JSONDepthError) as caught:
        loads(deep(MAX_JSON_DEPTH + 1))
    assert isinstance(caught.value, json.JSONDecodeError)
    assert caught.value.pos == MAX_JSON_DEPTH  # the first bracket beyond the limit
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in str(caught.value)


def test_json_deeper_than_the_interpreter_recursion_limit_is_a_depth_error():
    with pytest.raises(JSONDepthError):
        loads(deep(30_000))  # json.loads alone raises RecursionError here
    with pytest.raises(JSONDepthError):
        loads('{"a": ' * 30_000 + "1" + "}" * 30_000)


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"prompt": "[" * 500 + '\\"{' * 300})
    assert loads(text) == json.loads(text)


def test_check_depth_names_where():
    with pytest.raises(UserError, match="study 's' attribute x: nested deeper than 3 levels"):
        check_depth([[[[1]]]], "study 's' attribute x", limit=3)
    assert check_depth([[[1]]], "x", limit=3) == [[[1]]]


def test_a_fifo_is_refused_at_once(tmp_path, deadline):
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    with deadline(20):
        with pytest.raises(NotARegularFile, match=r"state.json: is a FIFO \(named pipe\); a saved model's "):
            read_json(fifo, "a saved model's state.json")
        with pytest.raises(NotARegularFile, match="is a FIFO"):
            regular_file(fifo)


def test_a_folder_is_refused_and_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(NotARegularFile, match="is a folder"):
        read_text(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "absent.json")


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2]}')
    (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
    assert read_json(tmp_path / "a.json") == read_json(tmp_path / "link.json") == {"x": [1, 2]}
