"""Training recipes: one Python file per job, each defining `get_config()`.

Every recipe starts from `jaxcnn.training.config.default_config()` (where each key is
documented) and overrides only what it changes; the returned config is locked, so a typo in
a key fails loudly. Each file's docstring states the command that runs it, the hardware it
was meant for, and the result to expect with its source.

Files are loaded by path (`--config=train/configs/NAME.py`), not imported as modules, so
this package needs no imports of its own. `names()` lists the recipes.
"""

from __future__ import annotations

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """Sorted names of the recipes in this directory (file stems, e.g. "resnet50_imagenet")."""
    return sorted(
        f[: -len(".py")]
        for f in os.listdir(CONFIG_DIR)
        if f.endswith(".py") and not f.startswith("_")
    )


def path(name: str) -> str:
    """The absolute path of recipe `name` (as `names()` lists it), for `--config=`."""
    if name not in names():
        raise ValueError(f"name: expected one of {names()}, got {name!r}")
    return os.path.join(CONFIG_DIR, f"{name}.py")
