from __future__ import annotations

import pytest

from experiments.spaces import SPACES_DIR, load_space
from recsys.errors import UserError
from recsys.models.registry import list_models, model_class


def test_every_registered_model_has_a_valid_space():
    for name in list_models():
        space = load_space(name)
        assert set(space.params) <= set(model_class(name).param_names())
        for pname, value in space.default_point().items():
            assert space.params[pname].contains(value), (name, pname)


def test_ridge_space_is_read_from_the_toml():
    space = load_space("user_ridge")
    alpha = space.params["alpha"]
    assert (alpha.type, alpha.low, alpha.high, alpha.log) == ("float", 0.01, 1000.0, True)
    assert space.default_point() == {"alpha": 3.0, "user_alpha": 1.0, "bias_shrinkage": 3.0}
    assert load_space("global_mean").params == {}


def _write(tmp_path, text, model="ridge"):
    (tmp_path / f"{model}.toml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[alhpa]\ntype = "float"\nlow = 1.0\nhigh = 2.0\n', "has no parameter 'alhpa'; it takes alpha"),
        ('[alpha]\ntype = "real"\nlow = 1.0\nhigh = 2.0\n', "type must be one of float, int, categorical"),
        ('[alpha]\ntype = "float"\nlow = 5.0\nhigh = 2.0\n', "low (5.0) must be below high (2.0)"),
        ('[alpha]\ntype = "float"\nlow = 0.0\nhigh = 20.0\nlog = true\n', "log = true needs low > 0"),
        ('[alpha]\ntype = "float"\nlow = 10.0\nhigh = 20.0\n', "default 3.0 lies outside the space"),
        ('[alpha]\ntype = "float"\nlow = 1.0\nhihg = 20.0\n', "unknown key(s) hihg"),
        ('[alpha]\ntype = "float"\nlow = 1.0\n', "missing `high`"),
        ('[alpha]\ntype = "int"\nlow = 1.5\nhigh = 20\n', "`low` must be an integer"),
        ('[alpha]\ntype = "categorical"\n', "non-empty list `choices`"),
        ('[alpha]\ntype = "categorical"\nchoices = [1.0, 2.0]\n', "default 3.0 lies outside"),
        ("alpha = 3\n", "expected a table"),
        ("[alpha\n", "not valid TOML"),
    ],
)
def test_bad_space_files_name_file_and_key(tmp_path, text, message):
    spaces = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_space("ridge", spaces)
    assert message in str(err.value)
    assert str(spaces / "ridge.toml") in str(err.value)


def test_missing_space_file_names_the_file_to_create(tmp_path):
    with pytest.raises(UserError, match=r"create .*ridge\.toml"):
        load_space("ridge", tmp_path)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        load_space("no_such_model")


def test_spaces_dir_holds_only_toml_for_models_that_exist_somewhere():
    assert (SPACES_DIR / "ridge.toml").is_file()
