"""``astro-neuron network``: runs the E/I preset, compares conditions, refuses what NEST
cannot run with one error line."""

from __future__ import annotations

import contextlib
import io
import re

from astro_neuron.apps.cli import main


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_network_compare_and_run_file(tmp_path):
    rc, out, err = _run(["network", "--duration", "300", "--dt", "1.0", "--compare",
                         "--out", str(tmp_path / "o")])
    assert rc == 0, err
    rate = {m.group(1).strip(): float(m.group(2))
            for m in re.finditer(r"^(input|no input|input, astrocytes silenced)\s+E\s+([\d.]+) Hz",
                                 out, re.M)}
    assert rate["no input"] == 0.0 and rate["input"] > 5.0
    assert rate["input"] > rate["input, astrocytes silenced"]
    assert (tmp_path / "o" / "run.npz").exists() and (tmp_path / "o" / "raster.png").exists()


def test_network_errors_are_one_line():
    for argv in (["network", "--dt", "0"], ["network", "--duration", "nan"],
                 ["network", "--nest", "--duration", "10"]):        # linear astrocytes
        rc, out, err = _run(argv)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
