"""The README runs as written: its Python example (on a small slice of its dataset), its CLI commands parse, and
the blocks the bench scripts rewrite are in place."""
import os
import re
import shlex

import pytest

from tfpipeline.bundle import ModelBundle
from tfpipeline.cli import build_parser
from tfpipeline.cli.parser import build_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.integration
def test_readme_keras_fit_example_runs(tmp_path):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"## Use from Python.*?```python\n(.*?)```", readme, re.S).group(1)
    small = code.replace('load_dataset("rotten_tomatoes")', 'load_dataset("rotten_tomatoes", limit=32)')
    small = small.replace("epochs=2", "epochs=1").replace('"runs/py"', repr(str(tmp_path / "py")))
    small = small.replace('"runs/py_model"', repr(str(tmp_path / "py_model")))
    assert small.count(str(tmp_path)) == 2, "the README example changed: update this test's substitutions"
    namespace = {}
    exec(compile(small, "README.md", "exec"), namespace)
    bundle = namespace["bundle"]
    assert bundle.model.history.history["loss"], "fit did not run"
    assert os.path.isfile(os.path.join(tmp_path, "py", "history.csv"))
    assert int(bundle.model.optimizer.iterations) == namespace["steps"]   # one epoch = the planned steps
    assert ModelBundle.load(str(tmp_path / "py_model")).labels == bundle.labels


def readme_commands(text: str):
    """Every ``tfpipeline ...`` command in the README's bash blocks (continuations joined, comments cut)."""
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("tfpipeline "):
                yield shlex.split(line, comments=True)


def test_readme_cli_commands_parse(monkeypatch):
    """Stale flags or values in the README's command examples fail here instead of on a user's machine.

    Each command is parsed and its config built (and validated) as ``tfpipeline`` would, without running it.
    """
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    commands = list(readme_commands(readme))
    assert len(commands) >= 10
    monkeypatch.chdir(ROOT)  # --config configs/quickstart.yaml is relative to the checkout
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {' '.join(argv)}")
        build_config(args.command, args)


def test_blocks_written_by_bench_scripts_are_in_place():
    """Every README / docs block a bench script rewrites (``--readme``, ``--docs``) exists exactly once, its start
    before its end, so a re-run replaces the table instead of failing (or leaving the old one) after an edit."""
    names = set()
    for name in sorted(os.listdir(os.path.join(ROOT, "bench"))):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "bench", name), encoding="utf-8") as f:
                source = f.read()
            names |= set(re.findall(r"<!-- ([a-z0-9-]+):start -->", source))
            names |= set(re.findall(r'"--readme-block", default="([a-z0-9-]+)"', source))
    assert {"serving-engines", "serving-batching", "version-change", "defaults-table", "matmul-kernels"} <= names
    texts = {}
    for doc in ("README.md", os.path.join("docs", "benchmarks.md")):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            texts[doc] = f.read()
    for name in names:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        homes = [doc for doc, text in texts.items() if start in text]
        assert len(homes) == 1, f"{start} in {homes or 'neither README.md nor docs/benchmarks.md'}"
        text = texts[homes[0]]
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), name
