"""`marsedge data stats`: counts and composition on the generated tree; CLI errors and help."""

from __future__ import annotations

import json

import numpy as np
import pytest

from marsedge.cli import main
from marsedge.data.ai4mars import AI4MarsDataset
from marsedge.data.stats import dataset_stats, format_stats
from marsedge.terrain import CLASS_NAMES


def test_stats_count_every_labelled_pixel(tiny_ai4mars):
    stats = dataset_stats(tiny_ai4mars)
    assert set(stats["splits"]) == {"train", "gold-min1", "gold-min2", "gold-min3", "m2020-train"}
    assert stats["unlabelled_images"] == {"msl": 3}
    train = stats["splits"]["train"]
    hist = np.bincount(
        np.concatenate([s.label.ravel() for s in AI4MarsDataset(tiny_ai4mars, "train")]), minlength=256
    )
    assert [train["pixels"][n] for n in CLASS_NAMES] == hist[:6].tolist()
    assert train["unlabelled_pixels"] == hist[255]
    assert sum(train["percent"].values()) == pytest.approx(100.0)
    assert stats["splits"]["m2020-train"]["pixels"]["rover"] == 0
    assert "gold-min3" in format_stats(stats)


def test_stats_cli_writes_chart_and_json(tiny_ai4mars, tmp_path, capsys):
    chart, numbers = tmp_path / "c.png", tmp_path / "s.json"
    assert main(["data", "stats", str(tiny_ai4mars), "--chart", str(chart), "--json", str(numbers)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "m2020-train" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    assert json.loads(numbers.read_text())["splits"]["train"]["images"] == 16


def test_cli_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "absent") in err
    with pytest.raises(SystemExit) as exit_:
        main(["data", "stats"])
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    "command", [["data"], ["data", "synth"], ["data", "merge-labels"], ["data", "stats"]]
)
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
