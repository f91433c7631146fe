"""Property: any interleaving of successful runs, runs that complete with a broken gate, failed
runs and interrupted runs into one --out leaves either no folder, or a folder whose report.json
describes exactly the files in it (sha256 and all) and came from the last run that completed; and
`compress gate` never passes a folder whose run failed its gates."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.cli.main import cli
from compress.reporting.digest import file_sha256

# kind -> (arguments after --out, expected exit code, whether the run completes and is swapped in)
RUNS = {
    "ok": (["--model", "tiny_models:cnn", "export"], 0, True),
    "ok_wide": (["--model", "tiny_models:wide_cnn", "--input-shape", "1,1,8,8", "export"], 0, True),
    "gate_broken": (["--model", "tiny_models:cnn", "--recipe", "{gates}"], 1, True),
    "failed": (["--model", "tiny_models:nan_cnn", "export"], 1, False),
    "interrupted": (["--model", "tiny_models:interrupted_in_parity", "export"], 130, False),
}


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else None


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(sorted(RUNS)), min_size=1, max_size=4))
def test_interleaved_runs_leave_one_complete_run_or_nothing(tmp_path_factory, kinds):
    from click.testing import CliRunner

    runner = CliRunner()
    root = tmp_path_factory.mktemp("prop")
    gates = root / "gates.yaml"
    gates.write_text("version: 1\nsteps: [export]\ngates: {max_onnx_mb: 0.000001}\n")
    out = root / "runs" / "x"
    last_complete = None
    for kind in kinds:
        args, exit_code, completes = RUNS[kind]
        before = _snapshot(out)
        result = runner.invoke(cli, ["run", "--out", str(out), *[a.replace("{gates}", str(gates)) for a in args]])
        assert result.exit_code == exit_code, (kind, result.stderr)
        if completes:
            last_complete = kind
        else:
            assert _snapshot(out) == before, kind  # a failed or interrupted run changes nothing
        assert sorted(p.name for p in out.parent.iterdir()) == (["x"] if last_complete else [])  # no lock, staging, temp
        _check_folder(runner, out, last_complete)


def _check_folder(runner, out, last_complete):
    if last_complete is None:
        assert not out.exists()
        return
    report = json.loads((out / "report.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"report.json"}
    assert set(report["files"]) == on_disk
    assert all(file_sha256(out / name) == digest for name, digest in report["files"].items())
    assert report["model"]["name"] == ("wide_cnn" if last_complete == "ok_wide" else "cnn")
    gate = runner.invoke(cli, ["gate", str(out / "report.json"), "--require-parity"])
    assert gate.exit_code == (1 if last_complete == "gate_broken" else 0), gate.stderr
