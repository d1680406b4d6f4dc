"""The import contract (pyproject's ``[tool.importlinter]``) holds on this tree, and it bites.

The contract is checked by import-linter (``lint-imports``, ``nox -s imports``). A contract that
cannot fail is worse than none, so besides linting the real tree this file lints copies of it
with one wrong-direction import planted, and with one package name misspelt in the
configuration, and requires both to fail, naming what broke.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONFIG = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
ROOT_PACKAGES: list[str] = CONFIG["root_packages"]
CONTRACTS: dict[str, str] = {contract["id"]: contract["name"] for contract in CONFIG["contracts"]}
# The sample project the demo copies into a workspace: data, not part of codeagent_app's code.
SAMPLE_WORKSPACE = Path("codeagent_app", "sample", "workspace")

# lint-imports is a click command: ``python -c`` runs it with our arguments (the ``lint-imports``
# console script does exactly this, but ``-S`` below would not apply to a script's shebang).
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
)
# Which packages a tree's lint resolves to, printed one origin a line.
ORIGINS = "import importlib.util, sys; print(*(importlib.util.find_spec(n).origin for n in sys.argv[1:]), sep='\\n')"


def _library_dirs() -> list[str]:
    """Where import-linter, grimp and their dependencies are installed (this interpreter's site-packages)."""
    dirs = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    for name in ("importlinter", "grimp"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not installed (dev extra)"
        dirs.append(str(Path(spec.origin).parents[1]))
    return list(dict.fromkeys(dirs))


def _run_isolated(tree: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -S -c code args`` in ``tree`` so that the first-party packages come from ``tree`` only.

    The project is installed editable. setuptools does that with a ``__editable__...pth`` file in
    site-packages whose import line appends a finder to ``sys.meta_path`` mapping every
    first-party package to /work/main (the checkout that was installed): any package that is not
    found on ``sys.path`` first would silently be taken from that other tree (other editable
    styles put the checkout itself on ``sys.path`` through a ``.pth``, with the same effect).
    ``-S`` skips the ``site`` module, so no ``.pth`` file is processed and no such finder or path
    exists; site-packages is then put back by hand through PYTHONPATH, *after* the tree, for
    import-linter and its dependencies. A first-party package missing from the tree is then an
    error, never a quiet fallback; ``_assert_resolves_inside`` checks it besides.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "FORCE_COLOR", "PY_COLORS"}
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(tree), *_library_dirs()]),
        PYTHONIOENCODING="utf-8",
        # rich (import-linter's output) wraps at COLUMNS: keep each contract name and import on one line.
        COLUMNS="250",
        NO_COLOR="1",
        TERM="dumb",
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", code, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        check=False,
    )


def _assert_resolves_inside(tree: Path) -> None:
    result = _run_isolated(tree, ORIGINS, *ROOT_PACKAGES)
    assert result.returncode == 0, result.stderr
    origins = [Path(line) for line in result.stdout.splitlines()]
    assert len(origins) == len(ROOT_PACKAGES)
    outside = [str(origin) for origin in origins if not origin.is_relative_to(tree)]
    assert not outside, f"first-party packages resolved outside {tree}: {outside}"


def _lint_imports(tree: Path) -> tuple[int, str]:
    # --no-cache: no .import_linter_cache/ left behind in the tree.
    result = _run_isolated(tree, LINT_IMPORTS, "--no-cache", "--no-logo")
    return result.returncode, result.stdout + result.stderr


def _copy_sources(dest: Path) -> Path:
    """The first-party packages' ``*.py`` files and pyproject.toml (import-linter's configuration)."""
    shutil.copyfile(PYPROJECT, dest / "pyproject.toml")
    for package in ROOT_PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            relative = source.relative_to(ROOT)
            if "__pycache__" in relative.parts or relative.is_relative_to(SAMPLE_WORKSPACE):
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    _assert_resolves_inside(dest)
    return dest


def _plant(path: Path, statement: str) -> int:
    """Insert ``statement`` at the top of the module (after ``from __future__``); its line number."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("from __future__ import")), 0)
    lines.insert(at, statement + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return at + 1


def test_the_tree_keeps_the_import_contract() -> None:
    returncode, output = _lint_imports(ROOT)
    assert returncode == 0, output
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in output, output


@pytest.mark.parametrize(
    ("module_file", "imported", "contract"),
    [
        pytest.param("codeagent/models.py", "bridge.runtime", "layers", id="domain-imports-bridge"),
        pytest.param("core_sync/agent.py", "core_async.agent", "layers", id="core_sync-imports-core_async"),
        pytest.param("legacy/agent.py", "core_sync.agent", "layers", id="legacy-imports-core_sync"),
        pytest.param("feature_flags/store.py", "codeagent_app.runner", "layers", id="flags-import-app"),
        pytest.param("migration/verify.py", "llm_stub", "no-stub-in-shim", id="migration-imports-stub"),
        pytest.param("benchmarks/plain.py", "tests.agents", "no-tests", id="benchmarks-import-tests"),
    ],
)
def test_a_wrong_direction_import_breaks_the_contract(
    tmp_path: Path, module_file: str, imported: str, contract: str
) -> None:
    tree = _copy_sources(tmp_path)
    line = _plant(tree / module_file, f"import {imported}")
    returncode, output = _lint_imports(tree)

    importer = module_file.removesuffix(".py").replace("/", ".")
    assert returncode != 0, output
    assert f"{CONTRACTS[contract]} BROKEN" in output, output
    assert f"{importer.split('.')[0]} is not allowed to import {imported.split('.')[0]}:" in output, output
    assert f"{importer} -> {imported} (l.{line})" in output, output


# A name outside root_packages is taken for a third-party package; with include_external_packages
# off (as configured) import-linter refuses to forbid one rather than silently finding no import.
EXTERNAL = "must have include_external_packages=True when there are external forbidden modules"


@pytest.mark.parametrize(
    ("correct", "misspelt", "error"),
    [
        pytest.param(
            '  "core_sync",\n', '  "core_snyc",\n', "Could not find package 'core_snyc'", id="root-package"
        ),
        pytest.param("| llm_stub |", "| llm_stbu |", "Missing layer 'llm_stbu'", id="layer"),
        pytest.param(
            'source_modules = ["bridge", "migration"]',
            'source_modules = ["bridge", "migratoin"]',
            "Module 'migratoin' does not exist",
            id="source",
        ),
        pytest.param(
            'forbidden_modules = ["llm_stub"]', 'forbidden_modules = ["llm_stbu"]', EXTERNAL, id="forbidden"
        ),
        pytest.param(
            'forbidden_modules = ["tests"]', 'forbidden_modules = ["test"]', EXTERNAL, id="forbidden-tests"
        ),
    ],
)
def test_a_misspelt_package_is_an_error_not_a_pass(
    tmp_path: Path, correct: str, misspelt: str, error: str
) -> None:
    tree = _copy_sources(tmp_path)
    config = tree / "pyproject.toml"
    text = config.read_text(encoding="utf-8")
    start = text.index("[tool.importlinter]")
    assert correct in text[start:], f"{correct!r} is no longer in [tool.importlinter]: update this test"
    config.write_text(text[:start] + text[start:].replace(correct, misspelt, 1), encoding="utf-8")

    returncode, output = _lint_imports(tree)
    assert returncode != 0, output
    assert error in output, output
    assert "KEPT" not in output, output
