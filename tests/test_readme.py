"""README.md is generated from nbs/index.ipynb, and states the two commands that CI and users run."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_in_sync_with_index_notebook():
    result = subprocess.run([sys.executable, "scripts/sync_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_commands_are_the_ones_ci_and_users_run():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    assert "pip install -c constraints.txt -e . && reid-workbench quickstart --out quickstart" in commands
    assert "bash scripts/test.sh" in commands
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # the install pins torch/torchvision so that pip never pulls CUDA wheels
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==\d", constraints, flags=re.M) and re.search(r"^torchvision==\d", constraints, flags=re.M)
    assert "-c constraints.txt" in (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
