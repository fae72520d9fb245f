"""Shared by the scripts that re-run a paper's table: train a run and time it, and keep the rows as JSON lines with a
CSV rewritten from them (rows may differ in columns; two processes write two files)."""
import json, time
from pathlib import Path

import pandas as pd

from reid_workbench.runs import train_run


def timed(method: str, data, run: Path, **kwargs) -> float:
    "Seconds `train_run(method, data, run, ...)` took (no progress bars, images not re-verified)."
    start = time.perf_counter()
    train_run(method, data, run, progress=False, verify_images=False, **kwargs)
    return round(time.perf_counter() - start, 1)


class RowWriter:
    "Appends each row to `out`'s .jsonl as it finishes and rewrites the CSV `out` from all the lines."
    def __init__(self, out: Path, **fixed):
        self.out, self.lines, self.fixed = Path(out), Path(out).with_suffix(".jsonl"), fixed

    def __call__(self, row: dict) -> None:
        row = self.fixed | row
        line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        print(line, flush=True)
        with open(self.lines, "a") as f: f.write(line + "\n")
        rows = [json.loads(x) for x in self.lines.read_text().splitlines() if x.strip()]
        pd.DataFrame(rows).to_csv(self.out, index=False, float_format="%.4f")
