"""docs/walkthrough.md cannot drift from the code: its trace tables are exactly what examples/walkthrough.py
prints, in the same order, every file:function they name exists, and the live gradient check passes.

The doc's convention: a trace row is a Markdown table row whose three cells are
    | stage | `tinymae/file.py:function` | `(8, 64, 108)` |
(the shape in backticks, written as Python writes a tuple). Any other table (no backticked shape in the
third cell) is free prose. Every backticked numeric tuple anywhere in the doc must also be a shape the
script prints, so prose cannot quote a stale shape either.
"""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "walkthrough.md"
SHAPE = r"`\((?:\d+(?:, \d+)*,?)?\)`"  # `(8, 64, 108)`, `(3,)`, `()`


def load_script():
    spec = importlib.util.spec_from_file_location("walkthrough", ROOT / "examples" / "walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc_rows():
    """(stage, where, shape) of every trace row of the doc, in order."""
    rows = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(SHAPE, cells[2]):
            rows.append((cells[0], cells[1].strip("`"), cells[2].strip("`")))
    return rows


@pytest.fixture(scope="module")
def traced():
    script = load_script()
    stages, results = script.walkthrough(seed=0)  # synthetic images: no data needed
    stages += script.mlp_walkthrough(seed=0)
    return [(stage, where, script.format_shape(shape)) for _, stage, where, shape in stages], results


@pytest.fixture(scope="module")
def script_rows(traced):
    return traced[0]


def test_doc_trace_is_the_script_trace(script_rows):
    rows = doc_rows()
    assert len(rows) > 50, "docs/walkthrough.md lost its trace tables"
    for i, (doc_row, script_row) in enumerate(zip(rows, script_rows)):
        assert doc_row == script_row, (f"trace row {i + 1} of docs/walkthrough.md is {doc_row}, the script prints "
                                       f"{script_row}. Regenerate with: python examples/walkthrough.py --markdown")
    assert len(rows) == len(script_rows), (f"docs/walkthrough.md has {len(rows)} trace rows, the script prints "
                                           f"{len(script_rows)}")


def test_every_shape_quoted_in_the_doc_is_printed(script_rows):
    printed = {shape for _, _, shape in script_rows}
    quoted = {match.strip("`") for match in re.findall(SHAPE, DOC.read_text())}
    stale = quoted - printed
    assert not stale, f"shapes quoted in docs/walkthrough.md that the script never prints: {sorted(stale)}"


def test_parameter_count_in_the_doc(traced):
    assert f"{traced[1]['n_params']:,} parameters" in DOC.read_text()


def test_every_location_exists(script_rows):
    for stage, where, _ in script_rows:
        path, function = where.split(":")
        source = (ROOT / path).read_text()
        *owner, name = function.split(".")
        if owner:
            assert f"class {owner[0]}" in source, f"{where} (stage {stage!r}): no class {owner[0]} in {path}"
        assert re.search(rf"^\s*def {name}\(", source, re.M), f"{where} (stage {stage!r}): no def {name} in {path}"


def test_live_gradient_check_passes():
    rows = load_script().gradient_check(seed=0)
    assert len(rows) == 4 * 3 + 1
    worst = max(rows, key=lambda row: row[3])
    assert worst[3] < 1e-6, f"{worst[0]}: analytic {worst[1]:.8e}, numeric {worst[2]:.8e}, rel error {worst[3]:.1e}"


def test_script_runs_and_reports_ok(capsys):
    assert load_script().main([]) == 0
    out = capsys.readouterr().out
    assert "(8, 17, 128)" in out and ": OK (tolerance 1e-6)" in out
