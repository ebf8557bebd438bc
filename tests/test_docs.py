"""The README and docs cannot name what the code does not have: files, modules, functions, commands."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page_id(path):
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_path_and_module_named_exists(page):
    text = page.read_text()
    for path in set(re.findall(r"`((?:tinymae|examples|benchmarks|research|tests)/[\w/]+\.py)", text)):
        assert (ROOT / path).is_file(), f"{page_id(page)} names {path}, which does not exist"
    for module in set(re.findall(r"python -m (tinymae(?:\.\w+)+)", text)):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{page_id(page)} runs {module}, which does not exist"
    for script in set(re.findall(r"python ((?:examples|benchmarks|research)/\w+\.py)", text)):
        assert (ROOT / script).is_file(), f"{page_id(page)} runs {script}, which does not exist"
    for link in set(re.findall(r"\]\(([^)#]+)\)", text)):
        if not link.startswith("http"):
            assert (page.parent / link).exists(), f"{page_id(page)} links to {link}, which does not exist"


def defined_names(source):
    return set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, flags=re.M)) | set(
        re.findall(r"^(\w+)\s*=", source, flags=re.M))


def test_the_readme_map_names_what_each_file_defines():
    """Each row of the README's map that names one engine file: every function or class in backticks is there
    (`linear_*` stands for linear_forward and linear_backward)."""
    checked = 0
    for row in (line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")):
        files = re.findall(r"`(tinymae/[\w/]+\.py)`", row)
        if len(files) != 1:
            continue
        source = (ROOT / files[0]).read_text()
        names = defined_names(source)
        for token in re.findall(r"`([A-Za-z_]\w*\*?)`", row):
            if token.endswith("_*"):
                assert any(n.startswith(token[:-1]) for n in names), f"{files[0]} has no {token}"
            elif token[0].isupper() or token.endswith(("_forward", "_backward")):  # a class or a pass
                assert token in names, f"the README's map says {files[0]} defines {token}; it does not"
            else:  # a function, or a variable a reader follows through it (ids_restore)
                assert re.search(rf"\b{token}\b", source), f"the README's map says {files[0]} has {token}; it does not"
            checked += 1
    assert checked > 20, "the README lost its map of the engine"


def test_the_readme_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python -m venv")]
    assert len(ci) == 1
    assert f"\n{ci[0]}\n" in (ROOT / "README.md").read_text(), "the README's test command is not the one .ci/run runs"


def test_the_readme_names_the_model_classes_as_the_code_does():
    readme = (ROOT / "README.md").read_text()
    for name in ("MaskedAutoencoderViT", "MaskedAutoencoderMLP", "ViTClassifier", "DataParallel"):
        assert name in readme
        assert re.search(rf"^class {name}\b", "".join(p.read_text() for p in (ROOT / "tinymae").rglob("*.py")), re.M)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_page_names_a_folder_only_the_developers_have(page):
    """A user's photos come from --download or their own folder: no page points at a workplace's copy."""
    assert "shared/data" not in page.read_text()


def test_no_help_text_names_a_folder_only_the_developers_have():
    from tinymae.config import FinetuneConfig, PretrainConfig
    for cls in (PretrainConfig, FinetuneConfig):
        for f in cls.__dataclass_fields__.values():
            assert "shared" not in f.metadata.get("help", "") and "shared" not in str(f.default)
    for script in [*(ROOT / "examples").glob("*.py"), *(ROOT / "research").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
                   *(ROOT / "tinymae").rglob("*.py")]:
        assert "shared/data" not in script.read_text(), script


def imported_modules(path):
    """The modules a file imports: 'tinymae.model.layers', '..backend' (relative, as written), ..."""
    text = path.read_text()
    return re.findall(r"^\s*from ([.\w]+) import", text, flags=re.M) + re.findall(r"^\s*import ([.\w]+)", text, flags=re.M)


def test_the_model_imports_nothing_above_it():
    """tinymae/model/ is the engine: it builds on the backend and the settings, never on the run tools, the
    fast path or the scripts (they build on it)."""
    for path in (ROOT / "tinymae" / "model").glob("*.py"):
        for module in imported_modules(path):
            if module.startswith("."):
                assert module in ("..backend", "..config") or not module.startswith(".."), f"{path.name} imports {module}"


SCRIPTS = {"examples": ("train_catsdogs", "walkthrough", "check_install"),
           "research": ("experiments", "recipe", "figures"),
           "benchmarks": ("bench_step", "bench_run", "profile_step", "train_torch")}


@pytest.mark.parametrize("folder", sorted(SCRIPTS))
def test_no_script_imports_another_script(folder):
    """Scripts share helper modules (research/runs.py, benchmarks/steps.py, ...), never each other's insides."""
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
        assert not re.search(r"from tinymae[.\w]* import [^\n]*\b_\w+", text), f"{folder}/{path.name} imports a private name"
