"""The exit codes the CLI documents (``rankguide-edge --help`` and README.md) are exactly those it can return:
0, 1 (an unexpected error), 130 (Ctrl-C) and the code of every RankGuideError class."""

from __future__ import annotations

import re

from click.testing import CliRunner
from conftest import REPO

from rankguide_edge import errors
from rankguide_edge.cli.main import main


def _classes(cls: type[errors.RankGuideError]) -> list[type[errors.RankGuideError]]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _classes(direct)]


def _returned_codes() -> set[int]:
    return {0, 1, 130} | {cls.exit_code for cls in _classes(errors.RankGuideError)}


def test_help_lists_every_exit_code_and_no_other() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0, res.output
    listed = res.output.split("Exit codes:", 1)[1]
    assert {int(c) for c in re.findall(r"^ {4}(\d+) {2,}\S", listed, flags=re.M)} == _returned_codes()


def test_readme_lists_every_exit_code_and_no_other() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("| code | meaning |", 1)[1].split("\n\n", 1)[0]
    assert {int(c) for c in re.findall(r"^\| (\d+) \|", table, flags=re.M)} == _returned_codes()


def test_every_documented_code_is_raised_and_every_error_class_too() -> None:
    """An error class nobody raises would document an exit code that never happens."""
    sources = "\n".join(p.read_text(encoding="utf-8") for folder in ("rankguide_edge", "cli")
                        for p in (REPO / folder).rglob("*.py"))
    raised = {cls for cls in _classes(errors.RankGuideError) if re.search(rf"raise {cls.__name__}\(", sources)}
    leaves = {cls for cls in _classes(errors.RankGuideError) if not cls.__subclasses__()}
    assert not {cls.__name__ for cls in leaves - raised}
    assert {cls.exit_code for cls in raised} | {0, 1, 130} == _returned_codes()
