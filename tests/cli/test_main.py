"""The root command: lazy subcommands (fast start without torch), versions from metadata, and the
one torch thread setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli_checks import one_line_error
from compress.cli.main import COMMANDS, cli

HEAVY = ("torch", "onnx", "onnxruntime", "matplotlib", "transformers", "sklearn")


def _imported_by(*args: str) -> tuple[str, set[str]]:
    """Run `compress ARGS` in a fresh interpreter; its stdout and which heavy modules it imported."""
    code = (
        "import sys\n"
        "from compress.cli.main import cli\n"
        f"try:\n    cli({list(args)!r}, prog_name='compress')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out, _, imported = done.stdout.rpartition("IMPORTED ")
    return out, set(eval(imported))  # noqa: S307 - our own printed list


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["passes"], ["passes", "--json"], ["run", "--help"], ["gate", "--help"]])
def test_fast_commands_import_no_heavy_library(args):
    out, imported = _imported_by(*args)
    assert imported == set(), f"compress {' '.join(args)} imported {imported}"
    assert out.strip()


def test_help_lists_every_command_with_the_first_sentence_of_its_own_help():
    out, _ = _imported_by("--help")
    for name, (_, short) in COMMANDS.items():
        command = cli.get_command(None, name)
        assert command is not None and command.name == name
        assert " ".join(command.help.split()).startswith(short), name
        assert name in out


def test_version_names_every_library_from_package_metadata(runner):
    from importlib import metadata

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    for package in ("compress", "torch", "onnx", "onnxruntime", "transformers"):
        assert f"{package} {metadata.version(package)}" in result.stdout


def test_an_unknown_command_is_one_usage_error(runner):
    result = runner.invoke(cli, ["bnech"])
    assert result.exit_code == 2 and "No such command 'bnech'" in result.stderr


def test_torch_threads_apply_before_and_after_torch_is_imported():
    code = (
        "from compress.threads import apply_torch_threads\n"
        "apply_torch_threads(2)\n"
        "import torch\n"
        "before = torch.get_num_threads()\n"
        "apply_torch_threads(1)\n"
        "print(before, torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.split() == ["2", "1"]


@pytest.mark.parametrize(("env", "expected"), [(None, "1"), ("3", "3"), ("0", "1"), ("many", "1")])
def test_torch_threads_default_to_one_or_what_torchrun_set(env, expected):
    code = "from compress.threads import default_torch_threads; print(default_torch_threads())"
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if env is not None:
        environ["OMP_NUM_THREADS"] = env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ)
    assert done.stdout.strip() == expected


def test_the_torch_threads_option_sets_torch(runner):
    import torch

    try:
        result = runner.invoke(cli, ["--torch-threads", "2", "passes"])
        assert result.exit_code == 0
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        one_line_error(runner.invoke(cli, ["--torch-threads", "0", "passes"]), 2, "'--torch-threads': 0 is not in the range")
    finally:
        from compress.threads import apply_torch_threads

        apply_torch_threads(1)


@pytest.mark.parametrize("args, needle", [
    (["--bogus"], "No such option '--bogus'; see '"),
    (["nosuch"], "No such command 'nosuch'"),
    (["run", "--model", "digits", "export", "--opset", "99"], "'--opset': 99 is not in the range 17<=x<=21; see '"),
    (["bench", "--threads", "0", "x.onnx"], "'--threads': 0 is not in the range x>=1; see '"),
])
def test_options_click_refuses_are_one_line_too(runner, args: list[str], needle: str) -> None:
    # click's usage block is four lines; ours is the one `compress: ...` line with its words.
    result = runner.invoke(cli, args)
    assert result.stderr.count("\n") == 1
    one_line_error(result, 2, needle)
