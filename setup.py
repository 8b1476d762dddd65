"""Package discovery for the namespaced layout (the rest of the metadata is in pyproject.toml).

The project's top-level folders are installed as ``shardkv.<folder>``; every sub-folder with
an ``__init__.py`` becomes a sub-package. Listing them by hand once let a new sub-package slip
out of the wheel while the editable install hid it, so they are found here instead.
"""

from pathlib import Path

from setuptools import setup

PARTS = ("node", "coordinator", "client", "cluster", "chaos", "backup")


def namespaced_packages() -> list[str]:
    packages = ["shardkv"]
    for part in PARTS:
        for init in sorted(Path(part).rglob("__init__.py")):
            relative = init.parent.relative_to(part)
            if "_root" in relative.parts:
                continue
            packages.append(".".join(("shardkv", part, *relative.parts)))
    return packages


setup(packages=namespaced_packages())
