"""What the jaxcv command prints: no library chatter, a one-line dataset notice, instant answers
for commands that need neither TensorFlow nor JAX, and the demo's closing screen."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from jaxcv import cli, console

# Prints the heavy modules a command imported; `jaxcv list` and usage errors need none of them.
_PROBE = """
import sys
from jaxcv import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("jax", "tensorflow", "tensorflow_datasets", "flax") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


def _probe(*args):
    env = {k: v for k, v in os.environ.items() if k != console.DEBUG_ENV}
    return subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("list",), 0, "digits_cnn"),
        (("--help",), 0, "usage: jaxcv"),
        (("train",), 2, "the following arguments are required"),
        (("train", "no_such_experiment", "--workdir", "w"), 2, "unknown experiment"),
        (("train", "digits_cnn", "--workdir", "w", "--set", "train.nope=1"), 2, "train.nope"),
    ],
)
def test_light_commands_import_neither_tensorflow_nor_jax(args, code, message):
    done = _probe(*args)
    assert done.returncode == code, done.stderr
    assert message in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY="


def test_verbose_shows_the_traceback_and_restores_the_environment(monkeypatch, capsys):
    monkeypatch.delenv(console.DEBUG_ENV, raising=False)
    assert cli.main(["train", "no_such_experiment", "--workdir", "w"]) == cli.EXIT_USAGE
    assert "JAXCV_DEBUG=1 for the full traceback" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown experiment"):
        cli.main(["--verbose", "train", "no_such_experiment", "--workdir", "w"])
    assert console.DEBUG_ENV not in os.environ


def test_quiet_libraries_silences_absl_and_library_warnings(monkeypatch):
    monkeypatch.delenv(console.DEBUG_ENV, raising=False)
    import logging

    absl = logging.getLogger("absl")
    monkeypatch.setattr(absl, "level", logging.NOTSET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_libraries()
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="tensorflow.foo")
        warnings.warn_explicit("mine", DeprecationWarning, "x.py", 1, module="jaxcv.foo")
    assert [str(w.message) for w in caught] == ["mine"]
    assert absl.level == logging.ERROR


def test_debug_keeps_tensorflow_environment_untouched():
    environ = {console.DEBUG_ENV: "1"}
    console.quiet_tensorflow_environment(environ)
    assert environ == {console.DEBUG_ENV: "1"}
    environ = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    console.quiet_tensorflow_environment(environ)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_generating_a_builtin_dataset_prints_one_line(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(console.DEBUG_ENV, raising=False)
    from jaxcv import data

    data.prepare("digits", tmp_path)
    out, err = capfd.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"Generating digits once into {tmp_path}")
    assert "1,797 images" in lines[0] and "later runs reuse it" in lines[0]
    data.prepare("digits", tmp_path)  # prepared: silent
    assert capfd.readouterr() == ("", "")


def test_demo_summary_sets_each_metric_beside_its_target(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_jaxcv_executable", lambda: "jaxcv")
    figure = tmp_path / "det" / "figures" / "sample_detections.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    rows = [
        ("digits_cnn", "test/accuracy", 0.98, 0.9972, tmp_path / "cls", tmp_path / "cls" / "f.png"),
        ("demo_faster_rcnn", "test/mAP50", 0.70, 0.612, tmp_path / "det", figure),
    ]
    text = cli.demo_summary(rows, 425.0)
    assert "finished in 7.1 min" in text
    assert "digits_cnn         test/accuracy      0.997   >= 0.98 (met)" in text
    assert "demo_faster_rcnn   test/mAP50         0.612   >= 0.70 (NOT met)" in text
    assert str(tmp_path / "det" / "report.md") in text
    assert str(figure) in text and "f.png" not in text  # only figures that exist
    assert f"jaxcv predict digits_cnn --workdir {tmp_path / 'cls'}" in text
    assert [row[0] for row in cli.DEMO] == ["digits_cnn", "demo_faster_rcnn"]
    assert all(Path(row[2]).parts[0] == "figures" for row in cli.DEMO)
