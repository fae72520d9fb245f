"""Every notebook in nbs/ runs top to bottom, as nbdev_test runs it (cells flagged notest/slow/gpu skipped)."""
import subprocess
import sys
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_"))

RUNNER = """
import sys
from pathlib import Path
from nbdev.config import get_config
from nbdev.test import test_nb
flags = get_config().tst_flags.split()
ok, seconds = test_nb(Path(sys.argv[1]), skip_flags=flags)
print(f"{sys.argv[1]}: {'ok' if ok else 'FAILED'} in {seconds:.1f}s")
sys.exit(0 if ok else 1)
"""


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: str(p.relative_to(NBS)))
def test_notebook_runs(notebook):
    result = subprocess.run([sys.executable, "-c", RUNNER, str(notebook)], cwd=NBS, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{notebook.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
