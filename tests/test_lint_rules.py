"""`make lint` fails on what the project forbids: an import across the layers, TensorFlow in a
process that must not load it, ``asyncio.wait_for``, and an undeclared dependency. Each rule is
run on a scratch file or scratch package with the project's own configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = CONFIG["tool"]["importlinter"]["root_packages"]


def _run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "NO_COLOR": "1"}
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _project(tmp: Path, files: dict[str, str], deps: list[str] | None = None) -> Path:
    """A scratch project: our layer packages (empty), the given files, and our tool settings."""
    for pkg in PACKAGES:
        (tmp / pkg).mkdir(parents=True, exist_ok=True)
        (tmp / pkg / "__init__.py").write_text("")
    tool = (ROOT / "pyproject.toml").read_text().split("[tool.ruff]", 1)[1]
    # the forecaster's rooms and shared modules, which its own contracts name
    rooms = ("serving", "training", "evaluation")
    for room in rooms:
        (tmp / "forecaster" / room).mkdir()
        (tmp / "forecaster" / room / "__init__.py").write_text("")
    for module in set(re.findall(r'"forecaster\.(\w+)"', tool)) - set(rooms):
        (tmp / "forecaster" / f"{module}.py").write_text("")
    for name, text in files.items():
        (tmp / name).write_text(text)
    # the repository's own known exceptions name modules a scratch project does not have
    tool = "\n".join(t for t in tool.splitlines() if not t.startswith("ignore_imports"))
    deps_text = ", ".join(f'"{d}"' for d in deps or [])
    (tmp / "pyproject.toml").write_text(
        f'[project]\nname = "scratch"\nversion = "0"\ndependencies = [{deps_text}]\n\n'
        f"[tool.ruff]{tool}"
    )
    return tmp


def test_import_contract_passes_on_the_repository() -> None:
    r = _run("lint-imports", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contract_fails_on_a_sideways_or_upward_import(tmp_path: Path) -> None:
    ok = _project(tmp_path / "ok", {"storage/store.py": "import core\n"})
    assert _run("lint-imports", cwd=ok).returncode == 0
    bad = _project(tmp_path / "bad", {"storage/store.py": "import forecaster\n"})
    r = _run("lint-imports", cwd=bad)
    assert r.returncode != 0 and "storage is not allowed to import forecaster" in r.stdout
    sideways = _project(tmp_path / "side", {"ingest/src.py": "import forecaster\n"})
    r = _run("lint-imports", cwd=sideways)
    assert r.returncode != 0 and "ingest is not allowed to import forecaster" in r.stdout


def test_import_contract_keeps_tensorflow_out_of_the_web(tmp_path: Path) -> None:
    bad = _project(tmp_path / "tf", {"web/page.py": "import keras\n"})
    r = _run("lint-imports", cwd=bad)
    assert r.returncode != 0 and "web is not allowed to import keras" in r.stdout


def test_ruff_bans_asyncio_wait_for(tmp_path: Path) -> None:
    banned = "asyncio." + "wait_for"  # assembled: this file must not itself use the name
    code = f"import asyncio\n\n\nasync def f(aw):\n    await {banned}(aw, 1)\n"
    proj = _project(tmp_path, {"core/waits.py": code})
    r = _run("ruff", "check", "--no-cache", "core/waits.py", cwd=proj)
    assert r.returncode != 0 and "TID251" in r.stdout and "asyncio.wait_for" in r.stdout


def test_deptry_fails_on_an_undeclared_dependency(tmp_path: Path) -> None:
    ok = _project(tmp_path / "ok", {"core/fast.py": "import numpy\n"}, deps=["numpy"])
    assert _run("deptry", ".", cwd=ok).returncode == 0
    bad = _project(
        tmp_path / "bad", {"core/fast.py": "import numpy\nimport orjson\n"}, deps=["numpy"]
    )
    r = _run("deptry", ".", cwd=bad)
    assert r.returncode != 0 and "'orjson' imported but" in r.stdout + r.stderr
