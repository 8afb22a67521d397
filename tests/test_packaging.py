"""The installed import names: `pip install .` adds `dmmlkd` to site-packages and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_install_adds_one_import_name(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-compile", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert top == ["bin", "dmmlkd"] or top == ["dmmlkd"], top
    installed = target / "dmmlkd"
    assert (installed / "learner" / "data" / "mfeat.npz").is_file()
    assert (installed / "studies" / "examples" / "budget-sweep.toml").is_file()
    assert not (installed / "tests").exists() and not (installed / "docs").exists()

    def imports(name: str) -> subprocess.CompletedProcess[str]:
        # -I: isolated (no cwd, no user site); the target folder alone on the path.
        code = f"import sys; sys.path.insert(0, {str(target)!r}); import {name}; print({name}.__file__)"
        return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                              cwd=tmp_path)

    ok = imports("dmmlkd.metrics")
    assert ok.returncode == 0 and ok.stdout.startswith(str(installed)), ok.stderr
    for old in ("metrics", "allocator", "learner", "studies", "userio", "bridge", "cli", "flower"):
        failed = imports(old)
        assert failed.returncode != 0 and "ModuleNotFoundError" in failed.stderr, (old, failed.stdout)
