"""The repository stands alone: no tracked file reads a path outside the checkout, and every data
file the tests, benchmarks and demo read is shipped in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a path outside the checkout looks like in code: the parent of the checkout (a sibling
# folder beside it), an absolute path of a development machine, or a home directory
# (the image's own user, /home/cryptocast, is a path inside the container, not of a machine).
OUTSIDE = re.compile(
    r"""\.\./shared|parents\[\d\]\.parent\b|["'](/work|/home/(?!cryptocast/)|/Users/|/root/)|ROOT\.parent"""
)


def _tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / p for p in out.split("\0") if p]


def test_no_tracked_code_reads_outside_the_checkout() -> None:
    offenders = []
    for path in _tracked():
        if path.suffix not in {".py", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".ini"} and (
            path.name not in {"Makefile", "Dockerfile", "run"}
        ):
            continue
        if path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "reads outside the checkout:\n" + "\n".join(offenders)


def test_the_scan_would_catch_one() -> None:
    # the offending strings are assembled, so this file does not itself look like one
    assert OUTSIDE.search('DATA = Path("/' + 'work/shared/data")')
    assert OUTSIDE.search('SHARED = ROOT.parent / "shared" / "data"')
    assert OUTSIDE.search("Path(__file__).resolve().parents[1].parent / 'shared'")
    assert not OUTSIDE.search('ROOT / "data" / "btcusdt_binance_1h.csv.gz"')


def test_shipped_data_is_tracked_with_its_provenance() -> None:
    tracked = {p.relative_to(ROOT).as_posix() for p in _tracked()}
    for folder in ("data", "cryptocast/data"):
        assert f"{folder}/PROVENANCE.md" in tracked
        files = [t for t in tracked if t.startswith(folder + "/") and not t.endswith(".md")]
        assert files, folder
        provenance = (ROOT / folder / "PROVENANCE.md").read_text()
        for f in files:
            stem = Path(f).name.removesuffix(".gz")
            assert stem.split("_head")[0].split(".")[0] in provenance, f"{f} has no provenance"
