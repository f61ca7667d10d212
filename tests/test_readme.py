"""The README's Python examples run, and give the results their comments say.

Blocks fenced as ```python are run statement by statement; blocks that need files users
download are fenced ```py. A statement whose comment is a Python literal states its result:
`(2, 10)` the shape of an array, `{"params", "batch_stats"}` the keys of a dict, anything else
the value itself (`55`, `('aux1/fc2', 'aux2/fc2', 'fc')`). Other comments are prose.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _literal_comments(source: str) -> dict[int, object]:
    """{line number: value} of the comments that are Python literals."""
    stated = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            try:
                stated[tok.start[0]] = ast.literal_eval(tok.string[1:].strip())
            except (ValueError, SyntaxError):
                pass
    return stated


def _matches(value, stated) -> bool:
    if (
        isinstance(stated, tuple)
        and all(isinstance(v, int) for v in stated)
        and hasattr(value, "shape")
    ):
        return tuple(value.shape) == stated
    if isinstance(stated, set):
        return set(value) == stated
    if isinstance(value, list | tuple) and isinstance(stated, tuple):
        return tuple(value) == stated
    return value == stated


def test_the_blocks_state_results():
    # Parametrizing over blocks that state nothing would check nothing.
    assert BLOCKS and all(_literal_comments(b) for b in BLOCKS)


@pytest.mark.parametrize(
    "index",
    # A block that builds a model takes seconds on the CPU: that is the slow lane's.
    [
        pytest.param(i, marks=[pytest.mark.slow] * ("create_model" in b))
        for i, b in enumerate(BLOCKS)
    ],
)
def test_readme_python_block_runs(index):
    source = BLOCKS[index]
    stated = _literal_comments(source)
    namespace: dict = {}
    checked = set()
    for stmt in ast.parse(source).body:
        where = f"README.md block {index}, line {stmt.lineno}"
        if isinstance(stmt, ast.Expr):
            value = eval(compile(ast.Expression(stmt.value), where, "eval"), namespace)
        else:
            exec(compile(ast.Module([stmt], type_ignores=[]), where, "exec"), namespace)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
            value = (
                namespace[targets[0].id]
                if len(targets) == 1 and isinstance(targets[0], ast.Name)
                else None
            )
        if stmt.end_lineno in stated:
            line = source.splitlines()[stmt.end_lineno - 1]
            assert _matches(value, stated[stmt.end_lineno]), f"{where}: {line!r} gave {value!r}"
            checked.add(stmt.end_lineno)
    assert checked == set(stated), f"comments on no statement's last line: {set(stated) - checked}"
