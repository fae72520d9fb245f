"""The web app end to end: `app.start_app` serves a tiny run's dashboards with voila on 127.0.0.1, headless Chromium
opens the page, the widgets render without JavaScript errors, only the dashboards that apply to the model have a tab,
every dashboard answers a real interaction (a click on a thumbnail, a query row, a part toggle, a palette pose, a save
button), and screenshots of every tab are left in ./artifacts/ (app_<method>_<tab>.png) — for a generative run with
tensor structure (DG-Net) and for a keypoint run (PT). Start-up times (first widget; tab builds) are printed."""
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TABS = {"dgnet": ("monitor", "retrieval", "swap", "interpolation", "part shuffle"),
        "pt": ("monitor", "retrieval", "swap", "pose transfer", "interpolation")}
HEADINGS = {"monitor": "Training monitor", "retrieval": "Retrieval", "swap": "Code swap", "pose transfer": "Pose transfer",
            "interpolation": "Interpolation", "part shuffle": "Part shuffle"}

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):   # in CI a missing browser is a broken setup, not a reason to skip
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); the browser test needs it", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from reid_workbench.app import free_port, start_app  # noqa: E402
from reid_workbench.data.synth import SynthConfig, write_synthreid  # noqa: E402
from reid_workbench.registry import method_info  # noqa: E402
from reid_workbench.runs import train_run  # noqa: E402


@pytest.fixture(scope="module")
def served_runs():
    "A one-step DG-Net and a one-step PT (its smoke settings, no guider) on a tiny SynthReID."
    work = Path(tempfile.mkdtemp(prefix="app_browser_"))
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(ids=16), progress=False)
    steps = dict(max_steps_per_epoch=1, log_every=1)
    train_run("dgnet", root, work / "dgnet", epochs=1, device="cpu", progress=False, trainer_overrides=steps)
    train_run("pt", root, work / "pt", device="cpu", progress=False, trainer_overrides=steps,
              config_overrides=method_info("pt").smoke | dict(guider="none", epochs_reid=0))
    yield {"dgnet": work / "dgnet", "pt": work / "pt"}
    shutil.rmtree(work, ignore_errors=True)


def _is_benign(text: str) -> bool:
    # a missing favicon is the browser's business, not the app's
    return "favicon" in text


VOILA_TEMPLATE_CDN = ("https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free",)


def _images(page) -> str:
    return page.evaluate("() => Array.from(document.images).filter(i => i.offsetParent).map(i => i.src).join('|')")


def _plots(page) -> str:
    return page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => p.innerHTML).join('|')")


def _changes_images(page, act, timeout: float = 30, what=_images):
    "Run `act()` and wait until what it shows (visible images, or the plots) changed; fails when nothing did."
    before = what(page)
    act()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what(page) != before: return
        time.sleep(0.2)
    raise AssertionError("the interaction changed nothing on the page")


def _saves(page, label: str = "save PNG"):
    "Click the first visible save button and wait for its 'saved … download' line."
    page.locator("button:visible", has_text=label).first.click()
    page.locator("a[download]:visible").first.wait_for(timeout=30_000)


def _use(page, tab: str):
    "One real interaction with the dashboard on show."
    visible = lambda text: page.locator("button:visible", has_text=text)
    if tab == "monitor":                                                      # the log-scale toggle redraws the curves
        _changes_images(page, lambda: page.get_by_text("log scale").first.click(), what=_plots)
    elif tab == "retrieval":
        _changes_images(page, lambda: page.locator(".rw-query-row:visible, button:visible", has_text="#").nth(3).click())
    elif tab == "swap":
        _changes_images(page, lambda: visible("#6").last.click())          # a structure donor
        _saves(page)
    elif tab == "interpolation":
        _changes_images(page, lambda: visible("#5").last.click())          # image b
    elif tab == "part shuffle":
        _changes_images(page, lambda: visible("part 1").first.click())
    elif tab == "pose transfer":
        visible("pose palette").first.click()
        _changes_images(page, lambda: visible(re.compile(r"^3$")).first.click())     # the third palette pose
        _saves(page)


def _open_app(run: Path, tabs: tuple, shots: Path, tmp_path: Path) -> dict:
    "Serve `run`, use every tab once in Chromium, screenshot each; the page's errors and timings."
    app = start_app(run, port=free_port(), folder=tmp_path / f"app_{run.name}")
    found = {"page_errors": [], "console": [], "external": [], "seconds": {}}
    try:
        app.wait_ready(60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(str(tmp_path / f"profile_{run.name}"), executable_path=CHROMIUM,
                                                            headless=True, args=CHROMIUM_ARGS,
                                                            viewport={"width": 1400, "height": 1800})
            try:
                page = browser.new_page()
                # the app must work offline: answer every request that leaves 127.0.0.1 with an empty body, and
                # record it (voila's lab template links Font Awesome's CSS on a CDN; voila bundles the font itself)
                page.route(lambda url: not url.startswith(app.url),
                           lambda route: (found["external"].append(route.request.url),
                                          route.fulfill(status=200, content_type="text/css", body="")))
                page.on("pageerror", lambda e: found["page_errors"].append(str(e)))
                page.on("console", lambda m: found["console"].append(f"{m.text} @ {m.location.get('url', '')}")
                        if m.type == "error" else None)
                start = time.monotonic()
                page.goto(app.url, timeout=180_000, wait_until="domcontentloaded")
                page.get_by_text(HEADINGS["monitor"], exact=True).wait_for(timeout=180_000)
                found["seconds"]["first widget"] = round(time.monotonic() - start, 1)
                assert page.title() == f"{run.name} · reid-workbench"
                assert page.locator(".rw-card").count() == 1 and "preset" in page.locator(".rw-card").inner_text()
                assert "Traceback" not in page.inner_text("body")
                page.locator(".js-plotly-plot:visible .main-svg").first.wait_for(timeout=30_000)  # loss curves
                assert [t.strip() for t in page.locator(".lm-TabBar-tab").all_inner_texts()] == list(tabs)
                _use(page, "monitor")
                page.screenshot(path=str(shots / f"app_{run.name}_monitor.png"), full_page=True)
                for tab in tabs[1:]:
                    start = time.monotonic()
                    page.locator(".lm-TabBar-tab", has_text=tab).first.click()
                    page.get_by_text(HEADINGS[tab], exact=True).wait_for(timeout=120_000)
                    found["seconds"][tab] = round(time.monotonic() - start, 1)
                    time.sleep(0.5)   # let images and plots settle
                    _use(page, tab)
                    time.sleep(0.5)
                    shown = page.locator("text=⚠ >> visible=true")
                    assert "Traceback" not in page.inner_text("body") and shown.count() == 0, \
                        f"{tab}: an error is on show: {shown.all_inner_texts()}"
                    page.screenshot(path=str(shots / f"app_{run.name}_{tab.replace(' ', '_')}.png"), full_page=True)
            finally:
                browser.close()
    finally:
        status = app.stop()
    assert status is not None and app.process.poll() is not None
    return found


@pytest.mark.parametrize("method", ["dgnet", "pt"])
def test_app_renders_in_chromium(served_runs, method, artifacts_dir, tmp_path):
    found = _open_app(served_runs[method], TABS[method], artifacts_dir, tmp_path)
    print(f"{method}: seconds to the first widget and to each tab: {found['seconds']}")
    assert not found["page_errors"], f"JavaScript errors on the page: {found['page_errors']}"
    bad = [e for e in found["console"] if not _is_benign(e)]
    assert not bad, f"console errors: {bad}"
    unexpected = [u for u in found["external"] if not u.startswith(VOILA_TEMPLATE_CDN)]
    assert not unexpected, f"the page asked for resources outside 127.0.0.1: {unexpected}"
    assert list((served_runs[method] / "figures").glob("*.png"))   # the save button (swap / pose transfer) wrote a file


def test_report_page_opens_in_chromium(artifacts_dir, tmp_path):
    "The quickstart's report/index.html from disk: tables, one plotly bundle drawing every curve, images, no errors."
    import numpy as np
    import pandas as pd
    from PIL import Image
    from reid_workbench.quickstart import report_page
    report, runs = tmp_path / "report", tmp_path / "runs"
    report.mkdir()
    results = pd.DataFrame([{"method": "baseline", "rank1": 0.7, "mAP": 0.6, "train_seconds": 10.0},
                            {"method": "dgnet", "rank1": 0.5, "mAP": 0.4, "train_seconds": 20.0},
                            {"method": "pt", "rank1": 0.6, "mAP": 0.5, "train_seconds": 30.0},
                            {"method": "chance (random ranking)", "rank1": 0.01, "mAP": 0.02}])
    codes = pd.DataFrame([{"method": "dgnet", "swap_l1_person": 0.2, "swap_l1_person_ref_a": 0.18,
                           "swap_l1_person_ref_b": 0.23, "swap_beats_both_person": False, "recon_ssim": 0.3}])
    rng = np.random.default_rng(0)
    for name in ("baseline", "dgnet", "pt"):
        (runs / name).mkdir(parents=True)
        steps = np.arange(1, 41)
        pd.DataFrame({"stage": "train", "epoch": steps // 10, "step": steps, "seconds": steps * 0.5,
                      "loss": 2 / steps + rng.random(40) * 0.05}).to_csv(runs / name / "losses.csv", index=False)
        Image.fromarray(rng.integers(0, 255, (60, 300, 3), dtype=np.uint8)).save(report / f"ranked_{name}.png")
    for name in ("dgnet", "pt"):
        Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(report / f"swap_grid_{name}.png")
    page_path = report_page(report, runs, results, codes, {"timings": {"total_s": 600.0, "jobs": 2}})
    page_errors, console_errors, requests = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
            assert page.locator(".js-plotly-plot").count() == 3                    # one loss figure per method
            widths = page.evaluate("() => Array.from(document.images).map(i => i.naturalWidth)")
            assert len(widths) == 5 and min(widths) > 0                             # three ranked lists, two grids
            text = page.inner_text("body")
            assert "do not beat both trivial answers" in text and "0.700" in text
            assert "Pose transfer, per row" in text and "structure donor b" in text   # pt's grid is a pose transfer
            page.screenshot(path=str(artifacts_dir / "report_page.png"), full_page=True)
        finally:
            browser.close()
    assert not page_errors and not console_errors, (page_errors, console_errors)
    assert all(u.startswith("file://") for u in requests), f"the report asked for the network: {requests}"
