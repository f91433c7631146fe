"""`compress`: the root command. Bad input (UsageError) becomes one line on stderr and exit 2, a
failed run (RunFailed) one line and exit 1; `--debug` shows the traceback instead."""

from __future__ import annotations

import signal
import sys

import click

from compress.errors import CompressError


class CompressGroup(click.Group):
    """Turns library errors into click's exit codes, so `CliRunner` tests see what users see."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CompressError, KeyboardInterrupt, Exception) as exc:
            if ctx.params.get("debug") or isinstance(exc, (click.ClickException, click.exceptions.Exit, click.Abort)):
                raise
            raise _as_click(exc) from None


class ToolError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"compress: {self.message}", err=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `finally` (temp files, the staging folder, the lock)
    runs; a KeyboardInterrupt subclass, so no `except Exception` can swallow it."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def _as_click(exc: BaseException) -> ToolError:
    if isinstance(exc, CompressError):
        return ToolError(str(exc), exc.exit_code)
    if isinstance(exc, Terminated):
        return ToolError("terminated (SIGTERM); no partial output was left in place", 128 + signal.SIGTERM)
    if isinstance(exc, KeyboardInterrupt):
        return ToolError("interrupted; no partial output was left in place", 130)
    return ToolError(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)", 1)


def _versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from compress.reporting.report import versions

    v = versions()
    click.echo(f"compress {v['compress']} (torch {v['torch']}, onnx {v['onnx']}, onnxruntime {v['onnxruntime']}, "
               f"transformers {v['transformers']}, python {v['python']})")
    ctx.exit(0)


@click.group(cls=CompressGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_versions, help="Show compress, torch, onnx and onnxruntime versions.")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Compress PyTorch models into fast, verified ONNX: run passes, bench, eval and gate."""


def _register() -> None:
    from compress.cli.bench import bench
    from compress.cli.eval import eval_command
    from compress.cli.gate import gate
    from compress.cli.inspect import inspect_command, passes_command
    from compress.cli.run import run

    for command in (run, bench, eval_command, gate, inspect_command, passes_command):
        cli.add_command(command)


_register()


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="compress")


if __name__ == "__main__":
    sys.exit(main())
