"""Every setting is declared once, at its config field, and every CLI option that is a setting comes from it.

The command tree is walked (no model is loaded): each option generated from a field must show that field's
name, default, bounds or choices and help; every other option must be one of the few listed inputs and
outputs; the CLI sources must not spell a setting's flag or a bound by hand; and a setting several configs
carry must be declared once and repeated with ``same_as``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rankguide_edge.cli._settings import FIELD, CommaList, FieldOption, setting
from rankguide_edge.cli.main import main
from rankguide_edge.config import RuntimeConfig, bounded, config_field, from_mapping, same_as, validate
from rankguide_edge.errors import ConfigError

CLI_SOURCES = Path(__file__).resolve().parents[1] / "cli"

#: options that are no setting of any config: what to read or write, how to print, which file holds settings,
#: and the one model that generate and bench capture run (any GGUF, not the SRM of a pair)
NOT_SETTINGS: dict[str, set[str]] = {
    "solve": {"--kind", "--json"},
    "chat": set(),
    "generate": {"--model", "--raw", "--json"},
    "trace": {"--out", "--signals-config", "--json"},
    "label": {"--out", "--json"},
    "calibrate": {"--out", "--json"},
    "analyze": {"--out", "--json"},
    "router fit": {"--out", "--report", "--json"},
    "router eval": {"--baselines", "--out", "--json"},
    "rank-study": {"--out", "--notes", "--json"},
    "bench capture": {"--model", "--json"},
    "bench signals": {"--json"},
    "bench run": {"--out"},
    "bench report": {"--out", "--json"},
    "bench serve": {"--json"},
    "serve": {"--config", "--log-level"},
    "steer extract": {"--out", "--traces", "--config", "--signals-config", "--json"},
    "steer inspect": {"--json"},
    "models list": {"--json"},
    "models pull": {"--force", "--keep-wheels", "--quiet"},
    "models path": set(),
    "models verify": {"--json"},
    "doctor": {"--json", "--quick"},
}

#: field names that several configs use for different settings (so each has its own declaration), and why
HOMONYMS = {
    "layers": "tapped layers of a run (a spec), of the signals, steering layers, a benchmark's layer count",
    "l2": "penalties of three different fits (calibrate, analyze, router fit)",
    "policy": "the routing policy vs the policy whose scores calibrate reads",
    "target_lrm_share": "calibrate's share of steps vs router fit's share of answer tokens",
    "max_tokens": "a reasoner's answer budget (at least 8) vs one generation's token cap (at least 1)",
    "api_key": "the key the server asks of its clients vs the key sent to a remote LRM",
    "methods": "the methods a bench run compares vs those a report shows",
    "plots": "each command's own figures",
    "profile": "calibrate prices latency by a profile only when given one, a report always (measured)",
    "window": "the signals' sliding rank window (32) vs the rank study's fixed last-W window of its new definitions",
}


#: flags a command declares by hand for something that is not the setting another command's field spells so
SAME_FLAG_OTHER_THING = {"--kind": "solve's answer format (an argument of Solver.solve), not a dataset's record kind"}


def _commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    ctx = click.Context(group)
    out: dict[str, click.Command] = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            out.update(_commands(cmd, path + " "))
        else:
            out[path] = cmd
    return out


COMMANDS = _commands()


def _options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and p.name != "help"]


def _field_options() -> list[tuple[str, FieldOption]]:
    return [(path, o) for path, cmd in COMMANDS.items() for o in _options(cmd) if isinstance(o, FieldOption)]


def _configs() -> set[type]:
    """Every config a CLI option derives from, the configs their fields repeat, and the server's."""
    from rankguide_edge.collab.specdec import SpecDecConfig
    from rankguide_edge.server.settings import ServerConfig

    seen: set[type] = {o.config for _, o in _field_options()} | {ServerConfig, SpecDecConfig}
    return seen


def test_the_tree_holds_every_command() -> None:
    assert set(COMMANDS) == set(NOT_SETTINGS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_is_a_field_or_a_listed_input(path: str) -> None:
    cmd = COMMANDS[path]
    by_hand = {max(o.opts, key=len) for o in _options(cmd) if not isinstance(o, FieldOption)}
    assert by_hand == NOT_SETTINGS[path], f"{path}: declare settings with cli._settings.setting()"
    for o in _options(cmd):
        assert o.help and len(o.help) >= 12, (path, o.opts)


@pytest.mark.parametrize("path,opt", _field_options(), ids=lambda v: v if isinstance(v, str) else v.opts[0])
def test_every_generated_option_shows_its_field(path: str, opt: FieldOption) -> None:
    f = config_field(opt.config, opt.field_name)
    meta = f.metadata
    where = f"{path} {opt.opts[0]} ({opt.config.__name__}.{opt.field_name})"
    # the help is the field's, first letter up
    text = meta["help"].strip()
    assert text and opt.help is not None and opt.help.startswith(text[0].upper() + text[1:]), where
    # the flag: the field's own spelling unless the command renamed it (--lrm-timeout, --trace-layers)
    if opt.name == opt.field_name:
        assert (meta["flag"] or "--" + opt.field_name.replace("_", "-")) in opt.opts + opt.secondary_opts, where
    # the default: the field's unless the command overrides it (and an override must change something)
    expected = f.default if opt.override is FIELD else opt.override
    assert opt.override is FIELD or opt.override != f.default, f"{where}: the override repeats the field default"
    ctx = click.Context(COMMANDS[path])
    if opt.file is not None:
        assert opt.default is None and f"[default: {opt.field_name} of {opt.file}" in opt.help, where
    elif expected in (None, "", ()):
        assert opt.default in (None, ()), where
        assert meta["unset"] is None or f"[default: {meta['unset']}]" in opt.help, where
    else:
        assert opt.show_default, where
        assert opt.type_cast_value(ctx, opt.default) == expected, where  # the bounds admit the default
    # bounds and choices
    kind = typing.get_type_hints(opt.config)[opt.field_name]
    ptype = opt.type.item if isinstance(opt.type, CommaList) else opt.type
    if kind is bool:
        assert opt.is_flag and opt.secondary_opts, where
    elif isinstance(ptype, (click.IntRange, click.FloatRange)):
        assert (ptype.min, ptype.max) == (meta["lo"], meta["hi"]), where
        assert not ptype.min_open and not ptype.max_open and not ptype.clamp, where
    elif isinstance(ptype, click.Choice):
        offered = meta["registry"]() if meta["registry"] else meta["choices"]
        assert list(ptype.choices) == [str(c) for c in offered if c is not None], where
    else:
        assert meta["lo"] is None and meta["hi"] is None and meta["choices"] is None, where
    if expected not in (None, "", ()) and opt.file is None:
        values = expected if isinstance(expected, tuple) else (expected,)
        lo, hi = meta["lo"], meta["hi"]
        assert all((lo is None or v >= lo) and (hi is None or v <= hi) for v in values
                   if not isinstance(v, (bool, str))), where


def test_a_bound_is_enforced_with_the_fields_numbers() -> None:
    res = CliRunner().invoke(main, ["solve", "hi", "--n-ctx", "8"])
    assert res.exit_code == 2 and "8 is not in the range 16<=x<=262144" in res.output
    res = CliRunner().invoke(main, ["label", "--data", "x", "--out", "y", "--max-tokens", "300000"])
    assert res.exit_code == 2 and "8<=x<=262144" in res.output
    res = CliRunner().invoke(main, ["bench", "serve", "--load-clients", "1,0"])
    assert res.exit_code == 2 and "comma list of positive integers" in res.output


def test_the_cli_sources_spell_no_setting_and_no_bound() -> None:
    flags = {o for _, opt in _field_options() for o in opt.opts + opt.secondary_opts}
    for path in sorted(CLI_SOURCES.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        declared = set(re.findall(r"click\.option\(\s*\"(--[a-z0-9-]+)", text)) - set(SAME_FLAG_OTHER_THING)
        assert not declared & flags, f"{path.name} declares {sorted(declared & flags)} by hand"
        if path.name != "_settings.py":
            assert not re.search(r"\b(IntRange|FloatRange)\(", text), f"{path.name} types a bound by hand"
    assert "click.option(\"--max-tokens\"" not in "".join(p.read_text() for p in CLI_SOURCES.glob("*.py"))


def _root(cls: type, name: str) -> str:
    return config_field(cls, name).metadata.get("owner") or f"{cls.__name__}.{name}"


def test_each_setting_has_one_declaration() -> None:
    configs = _configs()
    roots: dict[str, set[str]] = {}
    for cls in configs:
        for f in dataclasses.fields(cls):
            roots.setdefault(f.name, set()).add(_root(cls, f.name))
    twice = {name: sorted(r) for name, r in roots.items() if len(r) > 1 and name not in HOMONYMS}
    assert not twice, f"declared more than once (repeat one with config.same_as): {twice}"
    assert {name for name, r in roots.items() if len(r) > 1} == set(HOMONYMS)
    for cls in configs:  # a repeated field keeps its owner's bounds
        for f in dataclasses.fields(cls):
            owner = f.metadata.get("owner")
            if owner:
                owner_cls, owner_name = owner.split(".")
                src = next(c for c in [*configs, RuntimeConfig] if c.__name__ == owner_cls)
                o = config_field(src, owner_name).metadata
                assert (f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]) == (o["lo"], o["hi"],
                                                                                         o["choices"]), owner
                assert o.get("owner") is None, f"{owner} is itself a repeat"


def test_same_as_copies_the_setting_and_names_its_owner() -> None:
    @dataclasses.dataclass(frozen=True)
    class Owner:
        n: int = bounded(3, lo=1, hi=9, flag="--en", help="a count")

    @dataclasses.dataclass(frozen=True)
    class Again:
        n: int = same_as(Owner, "n", default=5)

    @dataclasses.dataclass(frozen=True)
    class Third:
        n: int = same_as(Again, "n", help="the count again")

    meta = config_field(Third, "n").metadata
    assert (meta["lo"], meta["hi"], meta["flag"], meta["owner"], meta["help"]) == (1, 9, "--en", "Owner.n",
                                                                                 "the count again")
    assert Again().n == 5 and Third().n == 5
    with pytest.raises(ConfigError, match="above its maximum 9"):
        from_mapping(Third, {"n": 10})
    with pytest.raises(ConfigError, match="has no field 'm'"):
        same_as(Owner, "m")


def test_tuple_items_are_bounded_and_bools_become_flags() -> None:
    @dataclasses.dataclass(frozen=True)
    class Counts:
        sizes: tuple[int, ...] = bounded((1, 2), lo=1, sep=",", help="sizes to try")
        quick: bool = bounded(False, help="skip the slow part")
        name: str | None = bounded(None, unset="the file's stem", help="what to call it")

    with pytest.raises(ConfigError, match="below its minimum 1"):
        validate(Counts(sizes=(1, 0)))

    @click.command()
    @setting(Counts, "sizes")
    @setting(Counts, "quick")
    @setting(Counts, "name")
    @setting(Counts, "sizes", flag="--other-sizes", default=(3,))
    def cmd(sizes: tuple[int, ...], quick: bool, name: str | None, other_sizes: tuple[int, ...]) -> None:
        click.echo(f"{sizes} {quick} {name} {other_sizes}")

    runner = CliRunner()
    assert runner.invoke(cmd, []).output == "(1, 2) False None (3,)\n"
    assert runner.invoke(cmd, ["--sizes", "4,5", "--quick", "--name", "x"]).output == "(4, 5) True x (3,)\n"
    bad = runner.invoke(cmd, ["--sizes", "4,0"])
    assert bad.exit_code == 2 and "'4,0' is not a comma list of positive integers, e.g. 1,2,4" in bad.output
    text = " ".join(runner.invoke(cmd, ["--help"]).output.split())
    assert "--quick / --no-quick Skip the slow part. [default: no-quick]" in text
    assert "What to call it. [default: the file's stem]" in text and "[default: 1,2]" in text


def test_the_server_reads_the_same_fields() -> None:
    from rankguide_edge.collab.reasoner import ReasonerConfig
    from rankguide_edge.config import field_help
    from rankguide_edge.server.schemas import ChatCompletionRequest, RankGuideOptions
    from rankguide_edge.server.settings import REASONER_FIELDS, ServerConfig

    reasoner = {f.name for f in dataclasses.fields(ReasonerConfig)}
    for name, info in RankGuideOptions.model_fields.items():  # a request's rankguide keys are reasoner settings
        assert name in reasoner, name
        if name != "steer":  # a request names a vector of the server's folder, not a file
            assert info.description == field_help(ReasonerConfig, name), name
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        assert ChatCompletionRequest.model_fields[name].description == field_help(ReasonerConfig, name)
    for name in REASONER_FIELDS:  # the server's defaults of reasoner settings are those fields, bounds and all
        assert _root(ServerConfig, name).split(".")[0] in {"ReasonerConfig", "SignalConfig", "SamplingConfig",
                                                           "RuntimeConfig"}, name
    # serve's options are ServerConfig's fields: every one of them, and the names a config file uses
    serve = {o.name for o in _options(COMMANDS["serve"]) if isinstance(o, FieldOption)}
    assert serve <= {f.name for f in dataclasses.fields(ServerConfig)}


def test_the_documented_server_config_file_is_read_by_the_same_fields(tmp_path: Path) -> None:
    from rankguide_edge.files import read_mapping
    from rankguide_edge.server.settings import ServerConfig

    doc = (CLI_SOURCES.parent / "docs" / "SERVER.md").read_text(encoding="utf-8")
    block = doc.split("## Configuration file", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    (tmp_path / "server.toml").write_text(block, encoding="utf-8")
    data = read_mapping(tmp_path / "server.toml")  # the reader `serve --config` uses
    cfg = ServerConfig.from_mapping(data)  # unknown keys or out-of-bound values would raise
    for key in ("max_tokens", "n_ctx", "queue_size", "request_timeout", "lrm_timeout", "lrm_retries", "parallel"):
        assert data[key] == config_field(ServerConfig, key).default == getattr(cfg, key), key
