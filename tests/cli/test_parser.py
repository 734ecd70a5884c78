"""The command line's shape: version, help texts, examples, defaults, one-line errors. No fitting here."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest

from recsys.cli import build_parser, main
from recsys.cli.common import HelpFormatter, parse_params
from recsys.errors import UserError


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of the top-level parser and of every (nested) sub-command."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _ in _commands(build_parser())]


def test_every_command_group_is_reachable():
    expected = {
        ("data", "simulate"),
        ("data", "validate"),
        ("models",),
        ("explain",),
        ("leaderboard",),
        ("similar-users",),
        ("similar-images",),
        ("serve",),
        ("tune",),
        ("study",),
        ("features", "embed"),
        ("features", "encoders"),
    }
    assert expected <= set(COMMANDS)


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"recsys {metadata.version('recsys-pamela')}"


def test_version_from_the_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "recsys.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("recsys ") and not proc.stderr


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in (
        "data",
        "models",
        "explain",
        "leaderboard",
        "similar-users",
        "similar-images",
        "serve",
        "tune",
        "study",
        "features",
    ):
        assert f"\n    {name}" in out, name
    assert "example:" in out


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "recsys")
def test_help_has_an_example_and_shows_defaults(path, capsys):
    parser = dict(_commands(build_parser()))[path]
    assert parser.formatter_class is HelpFormatter
    assert parser.epilog and parser.epilog.startswith("example:\n  recsys")
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    assert "example:" in capsys.readouterr().out

    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{' '.join(path)} {name} has no help text"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default:" in formatter._get_help_string(action), (
                f"{' '.join(path)} {name} hides its default"
            )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["leaderboard", "--params", "{bad"], "error: --params is not valid JSON: "),
        (["leaderboard", "--params", "[1, 2]"], "error: --params must be a JSON object"),
        (
            ["leaderboard", "--params", '{"ridge": 10}'],
            "error: --params value of 'ridge' must be a JSON object",
        ),
        (["similar-users", "--user", "1", "--params", "{bad"], "error: --params is not valid JSON: "),
        (["serve", "--params", '"alpha"'], "error: --params must be a JSON object"),
    ],
)
def test_bad_params_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2  # --params is read before any data is loaded
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_bad_params_from_the_installed_command_have_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "leaderboard", "--params", "{"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --params is not valid JSON") and proc.stderr.count("\n") == 1


def test_parse_params():
    assert parse_params(None) == {} and parse_params("") == {}
    assert parse_params('{"alpha": 10}') == {"alpha": 10}
    assert parse_params('{"ridge": {"alpha": 10}}', per_model=True) == {"ridge": {"alpha": 10}}
    with pytest.raises(UserError, match="must be a JSON object"):
        parse_params("3")
    with pytest.raises(UserError, match="value of 'ridge'"):
        parse_params('{"ridge": [1]}', per_model=True)


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    import recsys.cli.models

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(recsys.cli.models, "cmd_models", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_closed_pipe_is_quiet():
    """`recsys ... | head -1`: the reader goes away after one line; no BrokenPipe traceback, exit 0."""
    code = textwrap.dedent(
        """
        import sys
        import recsys.cli
        import recsys.cli.models

        def many(args):
            for i in range(200_000):
                print(f"line {i}")
            return 0

        recsys.cli.models.cmd_models = many
        sys.exit(recsys.cli.main(["models"]))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
