"""CLI start-up on a CPU machine: TensorFlow's CUDA-probe lines are hidden, real messages are not."""
import os
import re
import subprocess
import sys

from tfpipeline.cli.quiet import is_noise, startup_noise_filtered

CUDA_PROBE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796200500.672223   11179 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    b"GPU will not be used.",
    b"I0000 00:00:1796200500.671850   11179 port.cc:153] oneDNN custom operations are on.",
    b"E0000 00:00:1796200508.217030   11179 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    b"Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    b"E0000 00:00:1796200508.545812   11179 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512.",
    b"Traceback (most recent call last):",
    b"tfpipeline: error: data.csv:3: missing label",
    b"I think this line is mine",
]


def test_noise_patterns():
    assert all(is_noise(line) for line in CUDA_PROBE)
    assert not any(is_noise(line) for line in REAL)


def test_filter_drops_noise_keeps_the_rest_and_partial_lines(capfd):
    with startup_noise_filtered(enabled=True):
        for line in CUDA_PROBE[:2] + REAL[:2]:
            os.write(2, line + b"\n")
        os.write(2, b"a traceback line\n")
        os.write(2, CUDA_PROBE[3][:30])          # an absl line arriving in two writes
        os.write(2, CUDA_PROBE[3][30:] + b"\n")
        os.write(2, b"Continue? ")               # a prompt without newline is not held back
    err = capfd.readouterr().err
    assert err == (REAL[0] + b"\n" + REAL[1] + b"\n").decode() + "a traceback line\nContinue? "


def _run_cli(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra)
    cmd = [sys.executable, "-m", "tfpipeline.cli", "evaluate", "--model-dir", "no/such/model", "--dataset",
           "rotten_tomatoes"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_cli_stderr_is_only_the_error_unless_the_user_sets_the_log_level():
    quiet = _run_cli({})
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == ["tfpipeline: error: no/such/model: not a tfpipeline model folder "
                                                 "(no tfpipeline.json)"]
    loud = _run_cli({"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 2
    assert re.search(r"^[IW]\d{4} ", loud.stderr, re.M), loud.stderr   # TensorFlow's own start-up lines
    assert "tfpipeline: error: no/such/model" in loud.stderr
