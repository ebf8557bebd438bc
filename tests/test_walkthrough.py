"""docs/walkthrough.md cannot drift from the code: its trace tables are exactly what examples/walkthrough.py
prints, in the same order, every file:function they name exists, its value blocks are exactly what
`examples/walkthrough.py --values` prints, and the live gradient check passes.

The doc's conventions:
- a trace row is a Markdown table row whose three cells are
      | stage | `tinymae/file.py:function` | `(8, 64, 108)` |
  (the shape in backticks, written as Python writes a tuple). Any other table (no backticked shape in the
  third cell) is free prose. Every backticked numeric tuple anywhere in the doc must also be a shape the
  script prints, so prose cannot quote a stale shape either.
- a value block is a fenced ```text block right after a line `<!-- walkthrough --values: NAME -->`;
  `python examples/walkthrough.py --values --markdown` prints every block in that form.
"""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from tinymae import backend

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "walkthrough.md"
SHAPE = r"`\((?:\d+(?:, \d+)*,?)?\)`"  # `(8, 64, 108)`, `(3,)`, `()`
VALUE_BLOCK = r"<!-- walkthrough --values: (\w+) -->\n```text\n(.*?)\n```"


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


# ---- the value blocks (--values) ------------------------------------------------------------------

def doc_value_blocks():
    """[(name, lines)] of every value block in the doc, in order."""
    return [(name, text.split("\n")) for name, text in re.findall(VALUE_BLOCK, DOC.read_text(), re.S)]


@pytest.fixture(scope="module")
def script_values():
    return load_script().values(seed=0)  # synthetic images: no data needed


def test_doc_values_are_the_script_values(script_values):
    doc = dict(doc_value_blocks())
    assert len(doc) == len(doc_value_blocks()), "a value block is quoted twice in docs/walkthrough.md"
    for name, lines in script_values:
        assert name in doc, (f"docs/walkthrough.md does not show the value block {name!r}. Print the blocks with: "
                             "python examples/walkthrough.py --values --markdown")
        for i, (doc_line, line) in enumerate(zip(doc[name], lines)):
            assert doc_line == line, (f"value block {name!r}, line {i + 1}: the doc shows {doc_line!r}, the script "
                                      f"prints {line!r}. Regenerate with: python examples/walkthrough.py --values "
                                      "--markdown")
        assert len(doc[name]) == len(lines), f"value block {name!r}: {len(doc[name])} lines in the doc, {len(lines)} printed"
    stale = set(doc) - {name for name, _ in script_values}
    assert not stale, f"value blocks in docs/walkthrough.md that the script no longer prints: {sorted(stale)}"


def test_values_markdown_is_what_the_doc_quotes(script_values, capsys):
    assert load_script().main(["--values", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert [(name, text.split("\n")) for name, text in re.findall(VALUE_BLOCK, printed, re.S)] == script_values


def test_worked_example_is_the_engines_masking():
    ex = load_script().masking_example(seed=0)
    L, K = ex["L"], ex["K"]
    assert (L, K) == (8, 2)
    kept = ex["mask"] == 0  # (L,)
    np.testing.assert_array_equal(ex["ids_shuffle"][ex["ids_restore"]], np.arange(L))  # inverse permutations
    np.testing.assert_array_equal(np.flatnonzero(kept), np.sort(ex["ids_keep"]))
    np.testing.assert_array_equal(ex["x_masked"], ex["x"][ex["ids_keep"]])
    # the decoder's un-shuffle puts every kept token back at its patch, the mask token everywhere else
    np.testing.assert_array_equal(ex["x_full"][kept], ex["x"][kept])
    assert (ex["x_full"][~kept] == ex["mask_token"]).all()
    # backward: the mask token's gradient is the sum over the removed patches; removed patches get zero
    np.testing.assert_allclose(ex["dmask_token"][0], ex["dx_full"][~kept].sum(axis=0))
    np.testing.assert_array_equal(ex["dx_masked"], ex["dx_full"][ex["ids_keep"]])
    assert (ex["dx"][~kept] == 0).all()
    np.testing.assert_array_equal(ex["dx"][kept], ex["dx_full"][kept])


def numbers_and_words(lines):
    """A block's decimal numbers, and its text with them blanked out."""
    text = "\n".join(lines)
    return np.array([float(v) for v in re.findall(r"-?\d+\.\d+", text)]), re.sub(r"-?\d+\.\d+", "#", text)


def test_values_are_the_same_on_every_backend(xp, monkeypatch, script_values):
    """The value blocks do not depend on the backend: the masks come from the host generator, and the
    arithmetic is the same. (CuPy may round a float differently in the last printed digit.)"""
    script = load_script()
    monkeypatch.setattr(script, "xp", xp)
    blocks = script.values(seed=0)
    assert [name for name, _ in blocks] == [name for name, _ in script_values]
    for (name, lines), (_, expected) in zip(blocks, script_values):
        if backend.name == "cupy" and name in ("attention", "loss_on"):
            got, words = numbers_and_words(lines)
            want, expected_words = numbers_and_words(expected)
            assert words == expected_words
            np.testing.assert_allclose(got, want, atol=2e-3)
        else:
            assert lines == expected, f"value block {name!r} differs on this backend"
