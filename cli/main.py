"""`compress`: the root command. Bad input (UsageError) becomes one line on stderr and exit 2, a
failed run (RunFailed) one line and exit 1; `--debug` shows the traceback instead.

Subcommands load on first use (`LazyGroup`): `compress --help`, `--version` and `passes` start
without importing torch, onnx, onnxruntime or matplotlib, which cost seconds on a busy machine.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import time

import click

from compress.distributed import launched
from compress.errors import CompressError
from compress.threads import apply_torch_threads, default_torch_threads

# name -> (module:attribute of the click command, the first sentence of its help). The help is
# written here so `compress --help` lists the commands without importing them;
# tests/cli/test_main.py checks it against each command's own help.
COMMANDS = {
    "run": ("compress.cli.run:run", "Run passes on a model."),
    "bench": ("compress.cli.bench:bench", "Time ONNX models with onnxruntime on this CPU"),
    "eval": ("compress.cli.eval:eval_command", "Measure MODEL's quality on a data spec, optionally against a reference model."),
    "gate": ("compress.cli.gate:gate", "Check REPORT.json against budgets: the recipe's gates, overridden by flags."),
    "inspect": ("compress.cli.inspect:inspect_command", "Params, MACs, size and the layer table of a model (torch spec or ONNX file)."),
    "synthesize": ("compress.cli.synthesize:synthesize_command", "Make a synthetic input set for data-free distillation: BN inversion of a BatchNorm classifier, or token sequences for a text encoder."),
    "passes": ("compress.cli.inspect:passes_command", "List the passes and their options (the same names work in recipes and on the command line)."),
}


class CompressGroup(click.Group):
    """Loads subcommands lazily (click's documented LazyGroup pattern) and turns library errors
    into click's exit codes, so `CliRunner` tests see what users see."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # an unknown or bad option of `compress` itself
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's option click refused (range, type, unknown)
            if ctx.params.get("debug"):
                raise
            raise _one_line_usage(exc) from None
        except (CompressError, KeyboardInterrupt, Exception) as exc:
            if ctx.params.get("debug") or isinstance(exc, (click.ClickException, click.exceptions.Exit, click.Abort)):
                raise
            raise _as_click(exc) from None


QUIET_RANK_GRACE_S = 10


class ToolError(click.ClickException):
    def __init__(self, message: str, exit_code: int, quiet: bool = False) -> None:
        super().__init__(message)
        self.exit_code, self.quiet = exit_code, quiet

    def show(self, file=None) -> None:
        if not self.quiet:
            click.echo(f"compress: {self.message}", err=True)
            return
        # A quiet rank lets rank 0 say it and stop first, so that torchrun (which stops the other
        # ranks when one fails) names rank 0's exit as the root cause.
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(QUIET_RANK_GRACE_S)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `finally` (temp files, the staging folder, the lock)
    runs; a KeyboardInterrupt subclass, so no `except Exception` can swallow it."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def _one_line_usage(exc: click.UsageError) -> ToolError:
    """Click's own message (it names the option, the value and the allowed range) as our one line,
    with where to read the options instead of click's usage block."""
    command = exc.ctx.command_path if exc.ctx is not None else "compress"
    return ToolError(f"{exc.format_message().rstrip('.')}; see '{command} --help'", exc.exit_code)


def _as_click(exc: BaseException) -> ToolError:
    if isinstance(exc, CompressError):
        # Under torchrun every rank meets the same bad input or failed figure: rank 0 says it once.
        return ToolError(str(exc), exc.exit_code, quiet=not launched().main)
    if isinstance(exc, Terminated):
        return ToolError("terminated (SIGTERM); no partial output was left in place", 128 + signal.SIGTERM)
    if isinstance(exc, KeyboardInterrupt):
        return ToolError("interrupted; no partial output was left in place", 130)
    return ToolError(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)", 1)


def _versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from compress.versions import versions

    v = versions()
    click.echo(f"compress {v['compress']} (torch {v['torch']}, onnx {v['onnx']}, onnxruntime {v['onnxruntime']}, "
               f"transformers {v['transformers']}, python {v['python']})")
    ctx.exit(0)


@click.group(cls=CompressGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_versions, help="Show compress, torch, onnx and onnxruntime versions.")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("--torch-threads", type=click.IntRange(min=1), default=default_torch_threads, show_default="1, or OMP_NUM_THREADS as set by torchrun",
              help="Intra-op threads torch uses for every forward pass (training, reference outputs, parity, eval).")
def cli(debug: bool, torch_threads: int) -> None:
    """Compress PyTorch models into fast, verified ONNX: run passes, bench, eval and gate."""
    apply_torch_threads(torch_threads)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="compress")


if __name__ == "__main__":
    sys.exit(main())
