"""Runs every ```python block of README.md as its own script against the test daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import Daemon

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> List[str]:
    """The README's Python code blocks."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(blocks()) >= 6


@pytest.mark.parametrize("index", range(len(blocks())))
def test_readme_example_runs(index: int, daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / f"readme_{index}.py"
    script.write_text(blocks()[index])
    env = {**os.environ, "SANDPIT_URL": daemon.url, "SANDPIT_API_KEY": daemon.api_key}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"README example {index} failed:\n{proc.stdout}\n{proc.stderr}"
