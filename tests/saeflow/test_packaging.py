"""A non-editable install carries what the commands need at run time (deployments, the browser page)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_wheel_carries_deployments_and_package_data(tmp_path: Path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("saeflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # `saeflow deploy` reads deployments/prefect.yaml next to the installed packages.
    assert {"deployments/prefect.yaml", "saeflow/cli.py", "saeflow/serve.py", "flows/specs/__init__.py", "flows/specs/sweep.py",
            "infra/features/browser_page.html"} <= names
    # pytest is a test tool, not something saeflow needs at run time.
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    runtime = [line for line in requires if "extra ==" not in line]
    assert not any(line.split()[1].startswith("pytest") for line in runtime), runtime
