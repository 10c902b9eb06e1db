"""The README's Python example runs as written (on a small slice of its dataset)."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.integration
def test_readme_keras_fit_example_runs(tmp_path):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"## Use from Python.*?```python\n(.*?)```", readme, re.S).group(1)
    small = code.replace('load_dataset("rotten_tomatoes")', 'load_dataset("rotten_tomatoes", limit=32)')
    small = small.replace("epochs=2", "epochs=1").replace('"runs/py"', repr(str(tmp_path / "py")))
    assert small != code, "the README example changed: update this test's substitutions"
    namespace = {}
    exec(compile(small, "README.md", "exec"), namespace)
    assert namespace["model"].history.history["loss"], "fit did not run"
    assert os.path.isfile(os.path.join(tmp_path, "py", "history.csv"))
