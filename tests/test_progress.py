"""Progress in logs: whole lines at a bounded rate, never carriage-return floods."""
from __future__ import annotations

import io

from zeroseg.cli import main
from zeroseg.progress import LineProgress, progress


def test_line_progress_prints_at_most_every_ten_percent():
    out = io.StringIO()
    for _ in progress(range(1000), desc="work", unit="img", file=out):
        pass
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and 10 <= len(lines) <= 11
    assert lines[-1].startswith("work: 1000/1000 (100%)") and "img/s" in lines[-1]


def test_line_progress_prints_by_time_too():
    out = io.StringIO()
    bar = LineProgress(total=10 ** 6, desc="slow", file=out, every_s=0.0, every_pct=100)
    bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.update(1)
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 3 and "loss=0.5" in text and "left" in text


def test_synth_into_a_log_writes_few_lines(tmp_path, capsys):
    rc = main(["data", "synth", "--out", str(tmp_path / "d"), "--train", "30", "--val", "5", "--test", "5",
               "--size", "64"])
    err = capsys.readouterr().err
    assert rc == 0 and "\r" not in err and err.count("\n") <= 12, err
