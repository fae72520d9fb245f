#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which is not installable here).

Markdown cells are copied as they are; code cells become ```python blocks; cells flagged `#| hide` are left out.
`python scripts/sync_readme.py --check` exits 1 when README.md is out of date.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    parts = []
    for cell in cells:
        src = "".join(cell["source"]).strip("\n")
        if not src: continue
        if cell["cell_type"] == "markdown":
            parts.append(src)
        elif cell["cell_type"] == "code":
            lines = src.splitlines()
            if any(l.strip().replace(" ", "") in ("#|hide", "#|export", "#|exporti") for l in lines): continue
            lines = [l for l in lines if not l.startswith("#|")]
            if lines: parts.append("```python\n" + "\n".join(lines) + "\n```")
    return "<!-- generated from nbs/index.ipynb by scripts/sync_readme.py: edit the notebook -->\n\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render(ROOT / "nbs" / "index.ipynb")
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date: run python scripts/sync_readme.py")
            sys.exit(1)
    else:
        readme.write_text(text, encoding="utf-8")
