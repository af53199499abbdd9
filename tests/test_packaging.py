"""Packaging: the engine imports without torch, every sub-package ships, the CLI lists its commands."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

from nere.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
SOURCE_FOLDERS = ("cli", "engine", "train", "export")
BLOCKED = ("torch", "transformers", "torchcrf")


def _package_name(folder: Path) -> str:
    """Import name of a source folder, through pyproject's package-dir mapping."""
    rel = folder.relative_to(ROOT).as_posix()
    for name, base in sorted(PACKAGE_DIR.items(), key=lambda kv: -len(kv[1])):
        if rel == base or rel.startswith(base + "/"):
            return ".".join([name, *Path(rel).relative_to(base).parts])
    raise AssertionError(f"{rel}/ is not under any package-dir of pyproject.toml")


def _engine_modules() -> list[str]:
    mods = []
    for py in sorted((ROOT / "engine").rglob("*.py")):
        if "__pycache__" in py.parts or py.stem == "__main__":
            continue
        pkg = _package_name(py.parent)
        mods.append(pkg if py.stem == "__init__" else f"{pkg}.{py.stem}")
    return mods


def test_engine_imports_without_torch():
    modules = _engine_modules()
    assert "nere.engine" in modules and "nere.engine.core.viterbi" in modules
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        BLOCKED = {BLOCKED!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked: the engine must not import it", name=name)
                return None

        sys.meta_path.insert(0, Blocker())
        for mod in {modules!r}:
            importlib.import_module(mod)
        from nere.cli import main  # `nere --help` is torch-free too
        try:
            main(["--help"], prog_name="nere")
        except SystemExit as e:
            assert e.code == 0, e.code
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "nere" or m.split(".")[0] in BLOCKED)))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.split(".")[0] in BLOCKED]
    # layers: the engine never pulls in training or export code
    assert not [m for m in loaded if m.startswith(("nere.train", "nere.export"))]
    assert set(modules) <= set(loaded)


def test_blocker_really_blocks():
    """The import test above would pass vacuously if the blocker did nothing."""
    code = textwrap.dedent(
        """
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torchcrf":
                    raise ImportError("blocked", name=name)
        sys.meta_path.insert(0, Blocker())
        import torchcrf
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_every_subpackage_is_listed():
    listed = set(SETUPTOOLS["packages"])
    found, loose = set(), []
    for top in SOURCE_FOLDERS:
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts or any(part.endswith(".egg-info") for part in folder.parts):
                continue
            if (folder / "__init__.py").is_file():
                found.add(_package_name(folder))
            elif any(folder.glob("*.py")):
                loose.append(folder.relative_to(ROOT).as_posix())
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not loose, f"folders with Python files but no __init__.py (would not ship): {loose}"
    # and nothing listed that does not exist
    for name in listed:
        base = max((n for n in PACKAGE_DIR if name == n or name.startswith(n + ".")), key=len)
        folder = ROOT / PACKAGE_DIR[base] / Path(*name[len(base):].split(".")[1:])
        assert (folder / "__init__.py").is_file(), f"{name} is listed but {folder} has no __init__.py"


def test_cli_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"], prog_name="nere")
    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands:")[1]
    for name in ("train", "evaluate", "export", "extract", "bench"):
        assert f"\n  {name} " in commands, name
    (script,) = entry_points(group="console_scripts", name="nere")
    assert script.load() is main


def test_cli_unknown_command_is_a_clean_error():
    result = CliRunner().invoke(main, ["no-such-command"], prog_name="nere")
    assert result.exit_code == 2 and "No such command" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _in_git_checkout() -> bool:
    """True when ROOT is the top of a git work tree (not an sdist, a copy, or a bare tree)."""
    try:
        top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == ROOT


@pytest.mark.skipif(not _in_git_checkout(), reason="not a git checkout: tree.sh sizes the tree from git's file list")
def test_gpu_transfer_scripts_parse_and_size_the_tree():
    """scripts/gpu (the plan for a lent GPU, docs/benchmarks.md) parses, and the tree a
    device call would send is measured from git's own file list."""
    root = ROOT
    for script in sorted((root / "scripts" / "gpu").glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(root / "scripts" / "gpu" / "tree.sh"), "size"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("tree a device call sends: ") and float(out.split()[-2]) > 0
    bad = subprocess.run(["bash", str(root / "scripts" / "gpu" / "tree.sh"), "grow"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


# ------------------------------------------------------------------ missing extras
ENGINE_ONLY = """
import sys

class EngineOnly:  # what `pip install nere` leaves out: the train, export and bench extras
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed", name=name)
        return None

sys.meta_path.insert(0, EngineOnly())
from nere.cli import main
main({args!r}, prog_name="nere")
"""
NOT_INSTALLED = ("torch", "transformers", "torchcrf", "safetensors", "onnx", "psutil", "matplotlib")


def _engine_only(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    code = ENGINE_ONLY.format(blocked=NOT_INSTALLED, args=args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("args,extra", [
    (["bench", "--model", "b", "--corpus", "c.parquet", "--out", "o"], "bench"),
    (["train", "ner", "--model", "bilstm", "--dataset", "conll04", "--out", "o"], "train"),
    (["evaluate", ".", "--dataset", "conll04"], "train"),  # a checkpoint (no manifest.json)
    (["export", ".", "--out", "o"], "export"),
    (["study", "--dataset", "conll04", "--out", "o"], "train"),
])
def test_command_without_its_extra_prints_one_install_line(args, extra, tmp_path):
    """On the engine-only install a command that needs an extra stops at once: exit 1 and one
    line naming the pip install that adds it (no traceback, no run that fails later)."""
    proc = _engine_only(args, tmp_path)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(lines) == 1 and f"pip install 'nere[{extra}]'" in lines[0], lines
    assert not (tmp_path / "o").exists()  # nothing started


def test_engine_commands_need_no_extra(tmp_path):
    """`nere extract`, `nere evaluate BUNDLE` and the study's dry run work on the engine-only install."""
    from fixtures_bundles import make_bundle, scored_examples
    from nere.train.datasets import write_jsonl

    proc = _engine_only(["extract", "--help"], tmp_path)
    assert proc.returncode == 0 and "--model" in proc.stdout, proc.stderr[-2000:]
    (tmp_path / "data").mkdir()
    write_jsonl(scored_examples(), tmp_path / "data" / "test.jsonl")
    bundle = make_bundle(tmp_path / "joint", task="joint")
    proc = _engine_only(["evaluate", str(bundle), "--dataset", str(tmp_path / "data"), "--json"], tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["headline"]["through"] == "engine", proc.stderr[-2000:]
    proc = _engine_only(["study", "--dataset", "conll04", "--out", "o", "--dry-run", "--only", "ner-bilstm"], tmp_path)
    assert proc.returncode == 0 and "nere train ner --model bilstm" in proc.stdout, proc.stderr[-2000:]


def test_missing_extra_is_found_without_importing_it(monkeypatch):
    from nere.extras import missing_modules

    monkeypatch.setitem(sys.modules, "psutil", None)  # how Python marks a module as not importable
    assert missing_modules("bench")[:1] == ["psutil"]
