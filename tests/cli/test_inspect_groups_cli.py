from __future__ import annotations

import json

from compress.cli.main import cli


def test_inspect_groups_lists_widths_and_what_each_removal_touches(runner):
    result = runner.invoke(cli, ["inspect", "--groups", "--json", "digits"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    groups = {g["name"]: g for g in info["groups"]}
    assert info["kind"] == "channels" and len(groups) == 12
    assert groups["layer1.0.conv1"]["width"] == 16
    assert groups["layer1.0.conv1"]["touches"] == ["layer1.0.conv1 (Conv2d, out)", "layer1.0.bn1 (BatchNorm2d, out)", "layer1.0.conv2 (Conv2d, in)"]
    table = runner.invoke(cli, ["inspect", "--groups", "digits"])
    assert "prunable groups of digits (channels, 12 groups)" in table.stdout
