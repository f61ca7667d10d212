"""The README's Python examples run, and give the shapes their comments say.

Blocks fenced as ```python are run; blocks that need files users download are fenced ```py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    # Lines of the form `name = ...  # (shape)` state the shape of `name` right after them.
    for line in BLOCKS[index].splitlines():
        m = re.match(r"(\w+) = .*#\s*(\([\d, ]+\))\s*$", line)
        if m and m.group(1) in namespace:
            exec(compile(line.split("#")[0], "README line", "exec"), namespace)
            assert str(tuple(namespace[m.group(1)].shape)) == m.group(2), line
