"""`clip-api local up|approve|build|down`: each verb its own parser, showing only its own options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clip_api.cli import build_parser

OWN_OPTIONS = {
    "up": {"--models", "--approve", "--random-weights", "--port", "--moto-port", "--exit-when-ready", "--workdir", "--verbose"},
    "approve": {"--adopt-space", "--workdir"},
    "build": {"--param", "--workdir", "--verbose"},
    "down": {"--workdir"},
}


@pytest.mark.parametrize("verb", sorted(OWN_OPTIONS))
def test_each_verb_help_shows_only_its_own_options(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["local", verb, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: clip-api local {verb} ")
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)) == OWN_OPTIONS[verb] | {"--help"}


def test_local_help_lists_the_verbs(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "--help"])
    text = capsys.readouterr().out
    assert all(re.search(rf"^\s+{verb}\s", text, re.MULTILINE) for verb in OWN_OPTIONS)
    assert "--models" not in text and "--adopt-space" not in text


def test_existing_invocations_parse_as_before():
    parse = build_parser().parse_args
    up = parse(["local", "up", "--models", "clip-tiny", "--approve", "--port", "8001", "--moto-port", "5001", "--workdir", "w",
                "--exit-when-ready"])
    assert (up.action, up.models, up.approve, up.port, up.moto_port, up.workdir, up.exit_when_ready, up.verbose) == (
        "up", "clip-tiny", True, 8001, 5001, "w", True, False)
    assert parse(["local", "up", "--approve"]).workdir == ".local" and parse(["local", "up", "-v"]).verbose
    approve = parse(["local", "approve", "clip-tiny", "2", "--adopt-space", "--workdir", "w"])
    assert (approve.action, approve.model_id, approve.version, approve.adopt_space, approve.workdir) == (
        "approve", "clip-tiny", 2, True, "w")
    assert parse(["local", "approve", "clip-tiny", "3"]).adopt_space is False
    build = parse(["local", "build", "clip-tiny", "--param", "Variant=int8", "--param", "RandomInitSeed=1", "--workdir", "w"])
    assert (build.action, build.model_id, build.param, build.workdir, build.verbose) == (
        "build", "clip-tiny", ["Variant=int8", "RandomInitSeed=1"], "w", False)
    assert (parse(["local", "down", "--workdir", "w"]).workdir, parse(["local", "down"]).workdir) == ("w", ".local")


@pytest.mark.parametrize("argv", [["local", "approve", "clip-tiny"], ["local", "build"], ["local", "down", "--approve"],
                                  ["local", "build", "m", "--port", "1"]])
def test_a_verb_refuses_what_is_not_its_own(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2


def test_each_verb_runs_its_own_command(monkeypatch, tmp_path, capsys):
    from clip_api import cli

    calls = []
    monkeypatch.setattr(cli, "_local_mode", lambda verbose=False: calls.append(verbose) or _FakeUp)
    assert cli.main(["local", "down", "--workdir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"down {tmp_path}"
    assert cli.main(["local", "approve", "clip-tiny", "2", "--workdir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"approved clip-tiny 2 False {tmp_path}"
    assert calls == [False, False]


class _FakeUp:
    @staticmethod
    def down(workdir: Path) -> str:
        return f"down {workdir}"

    @staticmethod
    def approve(model_id: str, version: int, workdir: Path, adopt_space: bool) -> str:
        return f"{model_id} {version} {adopt_space} {workdir}"
