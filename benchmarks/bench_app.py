"""The web app as a user meets it, timed in headless Chromium: start-up (page open -> first widget; each tab's first
build) with a cold feature cache and again with a cached one, and per-update latency in every tab (a click -> the
page has settled: no DOM change for 400 ms; the last change's time counts).

Each run folder is copied first (the app writes its feature cache and saved figures into the run). Interactions per
tab: monitor (log-scale toggle), retrieval (a query-table row), swap (a structure donor), pose transfer (a palette
pose), interpolation (image b), part shuffle (a part toggle). Needs Debian's chromium and playwright.

Usage: python benchmarks/bench_app.py RUN [RUN ...] [--clicks 10] [--load 0]
"""
import argparse
import multiprocessing
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from playwright.sync_api import sync_playwright

from reid_workbench.app import free_port, start_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
HEADINGS = {"monitor": "Training monitor", "retrieval": "Retrieval", "swap": "Code swap", "pose transfer": "Pose transfer",
            "interpolation": "Interpolation", "part shuffle": "Part shuffle"}
WATCH = """() => { window.__last = performance.now();
  new MutationObserver(() => { window.__last = performance.now(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); }"""


def settled_ms(page, click, quiet: float = 0.4, timeout: float = 30) -> float:
    "Milliseconds from `click()` to the page's last DOM change before `quiet` seconds without one."
    start = page.evaluate("() => performance.now()")
    click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now, last = page.evaluate("() => [performance.now(), window.__last]")
        if last > start and now - last > quiet * 1000: return last - start
    raise TimeoutError("the page did not settle")


def interactions(page, tab: str, n: int):
    "`n` clicks that each change what the tab shows."
    button = lambda text: page.locator("button:visible", has_text=text)
    if tab == "monitor":
        box = page.locator("input[type=checkbox]:visible").nth(1)          # log scale (the first: auto-refresh)
        return [box.click for _ in range(n)]
    if tab == "retrieval":
        return [(lambda k=k: button(re.compile(rf"^#{k % 9 + 1}$")).first.click()) for k in range(n)]
    if tab in ("swap", "interpolation"):
        return [(lambda k=k: button(re.compile(rf"^#{k % 9 + 1}$")).nth(1).click()) for k in range(n)]
    if tab == "part shuffle":
        return [(lambda k=k: button(f"part {k % 4}").first.click()) for k in range(n)]
    if tab == "pose transfer":
        button("pose palette").first.click()
        time.sleep(1)
        return [(lambda k=k: button(re.compile(rf"^{k % 8 + 1}$")).first.click()) for k in range(1, n + 1)]
    return []


def session(run: Path, clicks: int, rows: list, label: str) -> dict:
    "Open the app for `run`, build every tab, time `clicks` interactions per tab; seconds to first widget and per tab."
    app = start_app(run, port=free_port())
    seconds = {}
    try:
        app.wait_ready(60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            start = time.monotonic()
            page.goto(app.url, timeout=300_000, wait_until="domcontentloaded")
            page.get_by_text(HEADINGS["monitor"], exact=True).wait_for(timeout=300_000)
            seconds["first widget"] = time.monotonic() - start
            tabs = [t.strip() for t in page.locator(".lm-TabBar-tab").all_inner_texts()]
            page.evaluate(WATCH)
            for tab in tabs:
                start = time.monotonic()
                page.locator(".lm-TabBar-tab", has_text=tab).first.click()
                page.get_by_text(HEADINGS[tab], exact=True).wait_for(timeout=300_000)
                seconds[tab] = time.monotonic() - start
                time.sleep(1.5)
                if clicks:
                    ms = [settled_ms(page, act) for act in interactions(page, tab, clicks + 1)][1:]
                    rows.append(dict(run=run.name, dashboard=tab, n=len(ms), median_ms=statistics.median(ms),
                                     p90_ms=float(np.percentile(ms, 90)), max_ms=max(ms), where=f"app ({label})"))
            browser.close()
    finally:
        app.stop()
    return seconds


def _spin():
    while True: pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--load", type=int, default=0, help="processes kept spinning on the CPU meanwhile")
    args = ap.parse_args()
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for p in spinners: p.start()
    work = Path(tempfile.mkdtemp(prefix="bench_app_"))
    rows, startup = [], []
    for source in map(Path, args.runs):
        run = work / source.name
        shutil.copytree(source, run, symlinks=True)
        shutil.rmtree(run / "cache", ignore_errors=True)
        cold = session(run, args.clicks, rows, "cold cache")
        cached = session(run, 0, rows, "cached")
        startup += [dict(run=run.name, cache=c, **{k: round(v, 1) for k, v in s.items()})
                    for c, s in (("cold", cold), ("cached", cached))]
    pd.set_option("display.width", 200)
    print(f"{args.load} spinning process(es); seconds from opening the page to the first widget, and to each tab's "
          f"first build:")
    print(pd.DataFrame(startup).to_string(index=False))
    print("\nper-update latency in the app (click -> page settled), ms:")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.0f}"))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
