"""``tfpipeline datasets``: the catalog table. Imports only the catalog, so it runs without loading TensorFlow."""
from __future__ import annotations

from tfpipeline.data.catalog import is_available, list_datasets


def run(config, args) -> int:
    print(f"{'name':<18}{'task':<16}{'package':<28}description")
    for info in list_datasets():
        mark = "" if is_available(info.name) else "  (not installed)"
        print(f"{info.name:<18}{info.task:<16}{info.package:<28}{info.description}{mark}")
    return 0
