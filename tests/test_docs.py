"""The README, the docs and the code cannot name what the code does not have: files, modules, functions, commands."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md", ROOT / "research" / "README.md",
         ROOT / "research" / "results_intro.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted(p for folder in ("tinymae", "examples", "research", "benchmarks", "tests")
                 for p in (ROOT / folder).rglob("*.py"))
# Files of other projects the code and docs cite: the official MAE's, llm.c's, timm's.
ELSEWHERE = {"models_mae.py", "main_pretrain.py", "main_finetune.py", "engine_pretrain.py", "engine_finetune.py",
             "util/pos_embed.py", "util/lr_sched.py", "util/lr_decay.py", "util/misc.py", "submitit_pretrain.py",
             "submitit_finetune.py", "doc/layernorm/layernorm.py", "layernorm.py", "layers.py", "fast_layers.py",
             "gradient_check.py", "train.py", "model.py", "engine.py", "models_vit.py", "train_gpt2.py",
             "setup.py", "conftest.py", "_array_api.py", "sklearn/utils/_array_api.py"}
SWEEP_PAGES = {"docs/results.md", "docs/recipe.md", "docs/results.json"}  # what research/experiments.py writes


def page_id(path):
    return str(path.relative_to(ROOT))


def resolves(name, near):
    """A file name as a text names it: from the repository, tinymae/, the text's own folder, or a file of that
    name anywhere in the repository."""
    if name in ELSEWHERE or name in SWEEP_PAGES:
        return True
    return any((base / name).exists() for base in (ROOT, ROOT / "tinymae", near)) or \
        any(p.name == name for p in ROOT.rglob(name.split("/")[-1]) if ".venv" not in p.parts and name.endswith(
            "/".join(p.parts[-len(name.split("/")):])))


def defines(path, name):
    text = path.read_text()
    return bool(re.search(rf"^\s*(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|^\s*{name}, ", text, re.M)) or \
        bool(re.search(rf"\b{name}\b\s*[,)]?\s*(?:=|:)", text))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_path_module_and_link_a_page_names_exists(page):
    text = page.read_text()
    for path in set(re.findall(r"`((?:tinymae|examples|benchmarks|research|tests)/[\w/]+\.py)", text)):
        assert (ROOT / path).is_file(), f"{page_id(page)} names {path}, which does not exist"
    for module in set(re.findall(r"python -m (tinymae(?:\.\w+)+)", text)):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), \
            f"{page_id(page)} runs {module}, which does not exist"
    for script in set(re.findall(r"python ((?:examples|benchmarks|research)/\w+\.py)", text)):
        assert (ROOT / script).is_file(), f"{page_id(page)} runs {script}, which does not exist"
    for link in set(re.findall(r"\]\(([^)#]+)\)", text)):
        if not link.startswith("http") and page.name != "results_intro.md":
            assert (page.parent / link).exists(), f"{page_id(page)} links to {link}, which does not exist"


@pytest.mark.parametrize("source", SOURCES, ids=page_id)
def test_no_docstring_comment_or_help_names_what_does_not_exist(source):
    """Every file a docstring, comment or help text names (model/layers.py, research/plan.py, ...), every
    file:function (attention.py:attention_forward) and every module a command runs is there."""
    text = source.read_text()
    for name in set(re.findall(r"(?<![\w./{}-])(\w[\w/]*\.py)\b", text)):
        assert resolves(name, source.parent), f"{page_id(source)} names {name}, which does not exist"
    for name, function in set(re.findall(r"([\w/]+\.py):(\w+)", text)):
        files = [p for p in ROOT.rglob(name.split("/")[-1]) if ".venv" not in p.parts]
        assert any(defines(p, function) for p in files), \
            f"{page_id(source)} names {name}:{function}, which is not there"
    for module in set(re.findall(r"python -m (tinymae(?:\.\w+)+)", text)):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{page_id(source)} runs {module}"


def test_the_readme_map_names_what_each_file_defines():
    """Each row of the README's map that names one engine file: every function or class in backticks is there
    (`linear_*` stands for linear_forward and linear_backward)."""
    checked = 0
    for row in (line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")):
        files = re.findall(r"`(tinymae/[\w/]+\.py)`", row)
        if len(files) != 1:
            continue
        source = (ROOT / files[0]).read_text()
        names = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, flags=re.M)) | set(
            re.findall(r"^(\w+)\s*=", source, flags=re.M))
        for token in re.findall(r"`([A-Za-z_]\w*\*?)`", row):
            if token.endswith("_*"):
                assert any(n.startswith(token[:-1]) for n in names), f"{files[0]} has no {token}"
            elif token[0].isupper() or token.endswith(("_forward", "_backward")):  # a class or a pass
                assert token in names, f"the README's map says {files[0]} defines {token}; it does not"
            else:  # a function, or a variable a reader follows through it (ids_restore)
                assert re.search(rf"\b{token}\b", source), f"the README's map says {files[0]} has {token}; it does not"
            checked += 1
    assert checked > 20, "the README lost its map of the engine"


def test_the_readme_map_lists_every_file_of_the_package():
    """The map and the tree agree: every module of tinymae/ is named in the README (the packages' own
    __init__.py aside), and every tinymae/ file the README names is there."""
    readme = (ROOT / "README.md").read_text()
    for path in (ROOT / "tinymae").rglob("*.py"):
        rel = page_id(path)
        if path.name != "__init__.py" and path.parent.name not in ("util", "fast"):
            assert f"`{rel}`" in readme or path.name in readme, f"the README's map does not name {rel}"
    assert "`tinymae/fast/`" in readme and "`tinymae/util/`" in readme


def test_the_readme_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python -m venv")]
    assert len(ci) == 1
    assert f"\n{ci[0]}\n" in (ROOT / "README.md").read_text(), "the README's test command is not the one .ci/run runs"


def test_the_readme_names_the_model_classes_as_the_code_does():
    readme = (ROOT / "README.md").read_text()
    code = "".join(p.read_text() for p in (ROOT / "tinymae").rglob("*.py"))
    for name in ("MaskedAutoencoderViT", "MaskedAutoencoderMLP", "ViTClassifier", "DataParallel", "FlatAdamW"):
        assert name in readme and re.search(rf"^class {name}\b", code, re.M)


def test_the_stated_python_versions_are_setups():
    setup = (ROOT / "setup.py").read_text()
    assert 'python_requires=">=3.10,<3.14"' in setup and "Python 3.10 to 3.13" in (ROOT / "README.md").read_text()
    for minor in range(10, 14):
        assert f"Python :: 3.{minor}" in setup


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_page_names_a_folder_only_the_developers_have(page):
    """A user's photos come from --download or their own folder: no page points at a workplace's copy."""
    assert "shared/data" not in page.read_text()


def test_no_help_text_names_a_folder_only_the_developers_have():
    for script in [*(ROOT / "examples").glob("*.py"), *(ROOT / "research").glob("*.py"),
                   *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tinymae").rglob("*.py")]:
        assert "shared/data" not in script.read_text(), script


def imported_modules(path):
    """The modules a file imports: 'tinymae.model.layers', '..backend' (relative, as written), ..."""
    text = path.read_text()
    return (re.findall(r"^\s*from ([.\w]+) import", text, flags=re.M)
            + re.findall(r"^\s*import ([.\w]+)", text, flags=re.M))


def test_the_model_imports_nothing_above_it():
    """tinymae/model/ is the engine: it builds on the backend and the settings, never on the run tools, the fast
    path or the scripts (they build on it)."""
    for path in (ROOT / "tinymae" / "model").glob("*.py"):
        for module in imported_modules(path):
            assert module in ("..backend", "..config") or not module.startswith(".."), f"{path.name} imports {module}"


SCRIPTS = {"examples": ("train_catsdogs", "walkthrough", "check_install", "walkthrough_figures"),
           "research": ("experiments",), "benchmarks": ("bench_step", "bench_run", "train_torch")}


@pytest.mark.parametrize("folder", sorted(SCRIPTS))
def test_no_script_imports_another_script(folder):
    """Scripts share helper modules (research/plan.py, ...), never each other's insides."""
    for path in (ROOT / folder).glob("*.py"):
        for module in imported_modules(path):
            assert module not in SCRIPTS[folder], f"{folder}/{path.name} imports the script {module}"


@pytest.mark.parametrize("folder", ["examples", "research", "benchmarks"])
def test_scripts_use_the_installed_package(folder):
    """Scripts import tinymae as installed, never through sys.path edits, and never a tinymae file's private
    (underscored) names."""
    for path in (ROOT / folder).glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text, f"{folder}/{path.name} edits sys.path"
        assert not re.search(r"from tinymae[.\w]* import [^\n]*\b_(?!_)\w+", text), \
            f"{folder}/{path.name} imports a private name"


def readme_section(title):
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}\n")[1].split("\n## ")[0]


@pytest.mark.parametrize("title, sources", [
    ("Results", ["docs/results.md", "docs/archive/results-2026-12-01/results.md"]),
    ("Speed", ["benchmarks/README.md"])])
def test_every_number_the_readme_reports_is_on_the_page_that_measured_it(title, sources):
    """The README quotes its results and speeds; each decimal number of those sections is written on a page a
    command produced (the results page from results.json, the benchmarks' page, an archived page as measured)."""
    pages = "\n".join((ROOT / s).read_text() for s in sources)
    section = re.sub(r"\(https?://[^)]*\)|\[[^]]*\]\([^)]*\)", "", readme_section(title))  # links aside
    quoted = re.findall(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])", section)
    assert quoted, f"the README's {title} section quotes no number"
    for number in quoted:
        assert re.search(rf"(?<![\d.]){re.escape(number.lstrip('+-'))}(?![\d])", pages), \
            f"the README's {title} section says {number}, which no page of {sources} shows"
