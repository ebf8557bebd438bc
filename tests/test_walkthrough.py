"""docs/walkthrough.md cannot drift from the code: its trace tables are exactly what examples/walkthrough.py
prints, in the same order, every file:function they name exists, its value blocks are exactly what
`examples/walkthrough.py --values` prints (examples/walkthrough_values.py), the live gradient check
(examples/walkthrough_gradcheck.py) passes, every script's --help prints its usage, --data takes a folder of
photos, and a bad --data or --seed is one line, not a traceback.

The doc's conventions:
- a trace row is a Markdown table row whose three cells are
      | stage | `tinymae/model/<file>.py:<function>` | `(8, 64, 108)` |
  (the shape in backticks, written as Python writes a tuple). Any other table (no backticked shape in the
  third cell) is free prose. Every backticked numeric tuple anywhere in the doc must also be a shape the
  script prints, so prose cannot quote a stale shape either.
- a value block is a fenced ```text block right after a line `<!-- walkthrough --values: NAME -->`;
  `python examples/walkthrough.py --values --markdown` prints every block in that form.
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinymae import backend
from tinymae.photos import decode, find_photos

from conftest import make_photos

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "walkthrough.md"
SHAPE = r"`\((?:\d+(?:, \d+)*,?)?\)`"  # `(8, 64, 108)`, `(3,)`, `()`
VALUE_BLOCK = r"<!-- walkthrough --values: (\w+) -->\n```text\n(.*?)\n```"

# The walkthrough's three files are scripts in examples/, not a package: import them as
# `python examples/walkthrough.py` does, with examples/ first on the path.
sys.path.insert(0, str(ROOT / "examples"))
import walkthrough  # noqa: E402
import walkthrough_gradcheck  # noqa: E402
import walkthrough_values  # noqa: E402


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
    stages, results = walkthrough.walkthrough(walkthrough.the_batch(seed=0))  # synthetic images: no data needed
    return [(stage, where, str(shape)) for _, stage, where, shape in stages], results


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
    reports = walkthrough_gradcheck.gradient_check(seed=0)
    assert [r.name for r in reports] == [*walkthrough_gradcheck.CHECKED, "every parameter"]
    worst = max(reports, key=lambda r: r.rel_error)
    assert worst.rel_error <= walkthrough_gradcheck.TOLERANCE, str(worst)


def test_live_gradient_check_catches_a_wrong_backward(monkeypatch):
    """The check is not vacuous: a backward that is 0.1% off in one parameter fails it, there only."""
    model_class = walkthrough_gradcheck.MaskedAutoencoderViT
    backward = model_class.backward

    def wrong_backward(self, dloss, cache):
        grads = backward(self, dloss, cache)
        grads["cls_token"] = grads["cls_token"] * 1.001
        return grads

    monkeypatch.setattr(model_class, "backward", wrong_backward)
    reports = {r.name: r.rel_error for r in walkthrough_gradcheck.gradient_check(seed=0, names=("cls_token",))}
    assert reports["cls_token"] > 1e-4 > walkthrough_gradcheck.TOLERANCE


def test_script_runs_and_reports_ok(capsys):
    assert walkthrough.main([]) == 0
    out = capsys.readouterr().out
    assert "(8, 17, 128)" in out and ": OK (tolerance 1e-07)" in out


# ---- the command lines --------------------------------------------------------------------------------

def script(name, *argv):
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *argv], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name", ["walkthrough.py", "walkthrough_values.py", "walkthrough_gradcheck.py",
                                  "train_catsdogs.py"])
def test_every_script_s_help_prints_its_usage(name):
    """Each script of examples/ this page uses (walkthrough_figures.py's: tests/test_walkthrough_figures.py)."""
    shown = script(name, "--help")
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: python examples/{name}"), shown.stderr
    assert "--seed" in shown.stdout


def test_the_values_script_prints_what_the_tour_prints(capsys):
    assert walkthrough_values.main(["--markdown"]) == 0
    alone = capsys.readouterr().out
    assert walkthrough.main(["--values", "--markdown"]) == 0
    assert capsys.readouterr().out == alone


def test_the_gradient_check_script_reports_ok(capsys):
    assert walkthrough_gradcheck.main([]) == 0
    assert ": OK (tolerance 1e-07)" in capsys.readouterr().out


# ---- bad input: one line, no traceback ------------------------------------------------------------

def test_a_missing_data_folder_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-photos-here"
    run = script("walkthrough.py", "--data", str(missing))
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0], run.stderr


@pytest.mark.parametrize("per_class", [0, 3])
def test_a_folder_without_8_photos_is_a_one_line_error(tmp_path, monkeypatch, capsys, per_class):
    if per_class:
        folder = make_photos(tmp_path, monkeypatch, per_class=per_class)  # 3 cats and 3 dogs
    else:
        folder = tmp_path / "photos"
        (folder / "cat").mkdir(parents=True)  # an empty class folder
    assert walkthrough.main(["--data", str(folder), "--values"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert ("holds 6 readable photos; the walkthrough needs 8" if per_class else "found no photos") in lines[0]


def test_photos_give_4_of_each_class_and_the_same_masks(tmp_path, monkeypatch):
    """--data takes 8 photos spread over the folder (sorted by class: 4 cats, 4 dogs); the noise, and with it every
    mask and index array of the tour, depends on the seed only, as the doc says."""
    folder = make_photos(tmp_path, monkeypatch, per_class=10)
    batch, synthetic = walkthrough.the_batch(str(folder)), walkthrough.the_batch()
    assert batch.photos.shape == (8, 54, 54, 3) and batch.source == f"8 photos from {folder}"
    decoded = decode(find_photos(folder), 54, progress=False)  # every photo, and its class
    labels = [int(decoded.labels[(decoded.images == photo).all(axis=(1, 2, 3))][0]) for photo in batch.photos]
    assert labels == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(backend.to_numpy(batch.noise), backend.to_numpy(synthetic.noise))


def test_a_negative_seed_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        walkthrough.main(["--seed", "-1"])
    assert exit_.value.code == 2  # argparse's usage error
    assert "argument --seed: must be a whole number, 0 or more; got '-1'" in capsys.readouterr().err


# ---- the value blocks (--values) ------------------------------------------------------------------

def doc_value_blocks():
    """[(name, lines)] of every value block in the doc, in order."""
    return [(name, text.split("\n")) for name, text in re.findall(VALUE_BLOCK, DOC.read_text(), re.S)]


@pytest.fixture(scope="module")
def script_values():
    return walkthrough_values.value_blocks(walkthrough.the_batch(seed=0))  # synthetic images: no data needed


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
        assert len(doc[name]) == len(lines), (f"value block {name!r}: {len(doc[name])} lines in the doc, {len(lines)} "
                                              "printed")
    stale = set(doc) - {name for name, _ in script_values}
    assert not stale, f"value blocks in docs/walkthrough.md that the script no longer prints: {sorted(stale)}"


def test_values_markdown_is_what_the_doc_quotes(script_values, capsys):
    assert walkthrough.main(["--values", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert [(name, text.split("\n")) for name, text in re.findall(VALUE_BLOCK, printed, re.S)] == script_values


def test_worked_example_is_the_engines_masking():
    ex = walkthrough_values.masking_example(seed=0)
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


def test_values_are_the_same_on_every_backend(xp, script_values):
    """The value blocks do not depend on the backend: the masks come from the host generator, and the
    arithmetic is the same. (CuPy may round a float differently in the last printed digit.)"""
    blocks = walkthrough_values.value_blocks(walkthrough.the_batch(seed=0))  # the batch on this backend
    assert [name for name, _ in blocks] == [name for name, _ in script_values]
    for (name, lines), (_, expected) in zip(blocks, script_values):
        if backend.name == "cupy" and name in ("attention", "loss_on"):
            got, words = numbers_and_words(lines)
            want, expected_words = numbers_and_words(expected)
            assert words == expected_words
            np.testing.assert_allclose(got, want, atol=2e-3)
        else:
            assert lines == expected, f"value block {name!r} differs on this backend"
