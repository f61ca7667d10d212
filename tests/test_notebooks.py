"""Every notebook in colab/ is stored clean and runs top to bottom, offline, with SMALL=1.

The notebooks are thin clients of the library; running them here is what keeps them from
rotting when an API moves. Notebooks are found by globbing, so a new one is tested as soon as
it lands. Static checks (fast): stored without outputs, an "Open in Colab" badge pointing at
the notebook itself, a first code cell that installs jaxcnn only where it is missing and
without its dependencies (Colab's preinstalled JAX must survive), a `SMALL` switch read from
the environment, and an entry in colab/README.md. Execution (slow): nbclient runs the notebook
in a fresh python3 kernel with SMALL=1 and the repository root as working directory; a failure
names the cell and shows its source and traceback.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
BADGE_URL = "https://colab.research.google.com/github/jaxcnn/jaxcnn/blob/main/colab/{}"
INSTALL_SOURCE = "git+https://github.com/jaxcnn/jaxcnn"
SMALL_SWITCH = re.compile(r'^SMALL = os\.environ\.get\("SMALL"\) == "1"', re.M)
# Generous: the slowest cell of the current notebooks takes well under a minute here. A cell
# that hangs (a forgotten download, a dead subprocess) fails instead of stalling CI.
CELL_TIMEOUT_S = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    # Parametrizing over an empty glob would collect nothing and pass silently.
    assert NOTEBOOKS, f"no notebooks found in {COLAB}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    import nbformat

    nb = _read(path)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs or execution counts; store notebooks "
        "without them (see colab/README.md)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_install_cell_and_small_switch(path):
    nb = _read(path)
    assert nb.cells and nb.cells[0].cell_type == "markdown", (
        f"{path.name}: the first cell must be the title with the Colab badge"
    )
    badge = BADGE_URL.format(path.name)
    assert badge in nb.cells[0].source and "colab-badge.svg" in nb.cells[0].source, (
        f"{path.name}: the first cell needs an 'Open in Colab' badge linking to {badge}"
    )

    code = _code_cells(nb)
    assert code, f"{path.name}: no code cells"
    install = code[0].source
    for needed, why in (
        ('find_spec("jaxcnn") is None', "install only where jaxcnn is missing (CI is offline)"),
        ("--no-deps", "keep Colab's preinstalled JAX"),
        (INSTALL_SOURCE, "install from the repository"),
    ):
        assert needed in install, (
            f"{path.name}: the first code cell must install jaxcnn ({why}); it lacks {needed!r}"
        )
    assert "import jax\n" not in install and "import jaxcnn" not in install, (
        f"{path.name}: the install cell must not import JAX (later cells may configure it)"
    )
    assert any(SMALL_SWITCH.search(c.source) for c in code), (
        f'{path.name}: no `SMALL = os.environ.get("SMALL") == "1"` switch in a code cell'
    )


def test_colab_readme_links_resolve_to_every_notebook():
    """colab/README.md links each notebook twice (the file, and its Colab badge), and every
    notebook it links exists: a renamed or removed notebook breaks no link there."""
    readme = (COLAB / "README.md").read_text()
    files = re.findall(r"\]\(([^)\s]+\.ipynb)\)", readme)
    relative = {f for f in files if "://" not in f}
    badges = {f.rpartition("/")[2] for f in files if f.startswith(BADGE_URL.format(""))}
    names = {p.name for p in NOTEBOOKS}
    assert relative == names, (
        f"colab/README.md links {sorted(relative)}; notebooks: {sorted(names)}"
    )
    assert badges == names, (
        f"colab/README.md's badges open {sorted(badges)}; notebooks: {sorted(names)}"
    )


def _failed_cell(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(o.output_type == "error" for o in cell.outputs):
            return i
    return None


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_top_to_bottom(path, monkeypatch):
    import nbclient

    nb = _read(path)
    # The kernel inherits this process's environment.
    monkeypatch.setenv("SMALL", "1")
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        cell = _failed_cell(nb)
        where = f"cell {cell}" if cell is not None else "a cell"
        pytest.fail(f"{path.name}: {where} failed:\n{_ANSI.sub('', str(e))}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as e:
        pytest.fail(f"{path.name}: a cell ran past {CELL_TIMEOUT_S} s: {e}", pytrace=False)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
