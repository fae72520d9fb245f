"""The retrieval and monitor dashboards as a new user meets them: the retrieval tab's feature cache (written, reused
without calling the model, recomputed for a changed checkpoint or a damaged file), the strip of every true match with
its rank, the clickable and paged query table, uploads that keep their shape, errors beside their control that clear
stale results; the monitor's sample grid by stage and epoch, loss weights apart from the losses, the log scale.
Everything runs on a toy_stripes run (seconds to train) on a tiny SynthReID."""
import datetime
import io
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import toy_methods  # noqa: F401  (registers toy_stripes)
from reid_workbench.core import load_checkpoint, save_checkpoint
from reid_workbench.dashboards import ALL, MonitorDashboard, OpenRun, RetrievalDashboard
from reid_workbench.dashboards.monitor import captioned_grid, grid_shape
from reid_workbench.dashboards.core import PAD_COLOUR, letterbox
from reid_workbench.dashboards.retrieval import QUERY_COLOUR
from reid_workbench.metrics import protocol_junk
from reid_workbench.viz import to_pil


QUERY_BORDER = tuple(int(QUERY_COLOUR[k:k + 2], 16) for k in (1, 3, 5))


def _open_counting(run_dir):
    "The run opened with a fresh model whose embed counts the images it is given."
    run = OpenRun.load(run_dir)
    calls, embed = [], run.model.embed
    run.model.embed = lambda images: (calls.append(len(images)), embed(images))[1]
    return run, calls


@pytest.fixture(scope="module")
def dash(toy_run):
    return RetrievalDashboard.from_run(toy_run, table_rows=4)


# ---------------------------------------------------------------- the feature cache
def test_feature_cache_is_written_then_reused_without_the_model(toy_run):
    run, calls = _open_counting(toy_run)
    first = RetrievalDashboard.for_run(run)
    s = first.session
    assert first.ok, first.error_message
    assert s.cache_status == "written" and s.cache_path.parent == toy_run / "cache" and s.cache_path.is_file()
    n = len(s.dataset.query) + len(s.dataset.gallery)
    assert sum(calls) == 2 * n                                  # every image and its mirror
    assert "features written" in first.summary.value
    run, calls = _open_counting(toy_run)
    again = RetrievalDashboard.for_run(run)
    assert again.session.cache_status == "loaded" and calls == []
    assert torch.equal(again.session.qf, s.qf) and torch.equal(again.session.gf, s.gf)
    np.testing.assert_array_equal(again.session.distances(), s.distances())
    assert "features loaded" in again.summary.value


def test_feature_cache_follows_a_checkpoint_rewritten_in_place(toy_run, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text((toy_run / "config.json").read_text())
    ckpt = run_dir / "checkpoints" / "last.pt"
    ckpt.write_bytes((toy_run / "checkpoints" / "last.pt").read_bytes())
    before = RetrievalDashboard.for_run(_open_counting(run_dir)[0]).session
    assert before.cache_status == "written"
    stamp, size = ckpt.stat().st_mtime_ns, ckpt.stat().st_size
    state = load_checkpoint(ckpt)
    state["model"]["colour_in.weight"] = state["model"]["colour_in.weight"].flip(0)   # same size, other weights
    save_checkpoint(state, ckpt)
    os.utime(ckpt, ns=(stamp, stamp))                           # same time: only the contents tell
    assert ckpt.stat().st_size == size
    run, calls = _open_counting(run_dir)
    after = RetrievalDashboard.for_run(run).session
    assert after.cache_status == "written" and calls and after.cache_path != before.cache_path
    assert not torch.allclose(after.qf, before.qf)
    direct = after._compute(64)                                 # what the new weights give
    assert torch.allclose(after.qf, direct[0]) and torch.allclose(after.gf, direct[1])


def test_a_damaged_or_stale_cache_is_recomputed_not_used(toy_run):
    run, _ = _open_counting(toy_run)
    good = RetrievalDashboard.for_run(run).session
    path, qf = good.cache_path, good.qf.clone()
    path.write_bytes(path.read_bytes()[:-200])                  # truncated
    run, calls = _open_counting(toy_run)
    s = RetrievalDashboard.for_run(run).session
    assert s.cache_status.startswith("recomputed") and "truncated" in s.cache_status and calls
    assert torch.equal(s.qf, qf)
    state = load_checkpoint(path)                               # a readable file whose features do not fit
    save_checkpoint(state | {"qf": state["qf"][:-1]}, path)
    run, calls = _open_counting(toy_run)
    s = RetrievalDashboard.for_run(run).session
    assert s.cache_status.startswith("recomputed") and "features" in s.cache_status and calls
    assert torch.equal(s.qf, qf)
    assert RetrievalDashboard.for_run(_open_counting(toy_run)[0]).session.cache_status == "loaded"


# ---------------------------------------------------------------- every true match with its rank
def _expected_matches(s, i, d):
    "Gallery indices of query i's true matches and their 1-based ranks, from the distance row (ties by index)."
    junk = protocol_junk(s.q_pids[i], s.q_camids[i], s.g_pids, s.g_camids)
    out = []
    for j in np.flatnonzero((s.g_pids == s.q_pids[i]) & ~junk):
        ahead = ((d < d[j]) | ((d == d[j]) & (np.arange(len(d)) < j))) & ~junk
        out.append((int(j), int(ahead.sum()) + 1))
    return sorted(out, key=lambda t: t[1])


@pytest.mark.parametrize("rerank", [False, True])
def test_true_matches_are_every_gallery_match_with_its_rank(dash, rerank):
    s = dash.session
    dist = s.distances("euclidean", rerank)
    for i in range(len(s.q_pids)):
        m = s.true_matches(i, rerank=rerank)
        assert list(zip(m.indices, m.ranks)) == _expected_matches(s, i, dist[i])
        assert m.distances == [float(dist[i, j]) for j in m.indices]
        first = s.scores(rerank=rerank).first_hit[i]
        assert (m.ranks[0] == first) if m.ranks else np.isnan(first)


def test_the_dashboard_shows_matches_beyond_the_top_k(dash):
    s = dash.session
    dash.topk.value = 1
    i = max(range(len(s.q_pids)), key=lambda q: s.true_matches(q).ranks[-1] if s.true_matches(q).ranks else 0)
    dash.select_query(i)
    assert dash.ok and len(dash.ranking) == 1
    assert dash.matches.ranks == s.true_matches(i).ranks and dash.matches.ranks[-1] > 1
    assert f"({len(dash.matches.indices)})" in dash.matches_label.value
    strip = Image.open(io.BytesIO(dash.matches_image.value))
    one = Image.open(io.BytesIO(dash.ranked_image.value))       # the query and one hit: two cells
    cell = (one.width + 6) // 2
    assert (strip.width + 6) // cell == min(len(dash.matches.indices), 11)
    dash.topk.value = 10


# ---------------------------------------------------------------- the query table
def test_query_table_pages_and_rows_select_their_query(dash):
    dash.sort_by.value = "ap_asc"
    table, rows = dash.table, dash.table_rows
    assert dash.page == 0 and dash.query_index == int(table["query"].iloc[0])
    dash.next_page.click()
    assert dash.page == 1 and list(dash.page_table()["query"]) == list(table["query"].iloc[rows:2 * rows])
    assert [b.description for b in dash.row_buttons] == [f"#{q}" for q in table["query"].iloc[rows:2 * rows]]
    dash.row_buttons[2].click()
    chosen = int(table["query"].iloc[rows + 2])
    assert dash.ok and dash.query_index == chosen == dash.query.value and dash.page == 1
    assert [b.button_style for b in dash.row_buttons] == ["", "", "info", ""]
    assert f"<b>query #{chosen}</b>" in dash.ap_label.value
    pages = -(-len(table) // rows)
    for _ in range(pages + 2): dash.next_page.click()
    assert dash.page == pages - 1                                 # clamped at the last page
    shown = len(table) - (pages - 1) * rows
    assert [b.layout.visibility for b in dash.row_buttons] == ["visible"] * shown + ["hidden"] * (rows - shown)
    dash.query.value = int(table["query"].iloc[1])                # choosing elsewhere turns to the query's page
    assert dash.page == 0 and dash.row_buttons[1].button_style == "info"
    dash.sort_by.value = "index"


# ---------------------------------------------------------------- uploads keep their shape
def test_an_upload_is_padded_to_the_model_shape_not_stretched(dash):
    s = dash.session
    h, w = s.size
    source = s.thumb(s.dataset.gallery[4].path)
    square = source.resize((60, 60))
    buf = io.BytesIO()
    square.save(buf, "PNG")
    dash.load_upload("square.png", buf.getvalue())
    assert dash.ok, dash.error_message
    view = np.asarray(dash.upload_view)
    assert view.shape == (h, w, 3)
    content = np.flatnonzero((view != PAD_COLOUR).any(axis=(1, 2)))   # rows that are not padding
    assert content.min() == (h - w) // 2 and content.max() == (h - w) // 2 + w - 1      # a w x w square, centred
    assert np.array_equal(view, np.asarray(letterbox(square, (h, w))))
    expected = s.rank_image(dash.upload_view, dash.topk.value)
    assert dash.ranking == expected.indices and dash.ranked_distances == expected.distances
    assert dash.matches is None and dash.matches_image.value == b""
    picture = np.asarray(Image.open(io.BytesIO(dash.ranked_image.value)))
    ys, xs = np.nonzero((picture == QUERY_BORDER).all(-1))       # the query cell's blue border
    shown = picture[ys.min() + 4:ys.max() - 3, xs.min() + 4:xs.max() - 3]
    assert shown.shape[:2] == dash.thumb_size                    # what the model sees, at the thumbnails' size
    assert (shown[2] == PAD_COLOUR).all() and not (shown[shown.shape[0] // 2] == PAD_COLOUR).all()
    dash.back_button.click()
    assert dash.ok and dash.upload_view is None


# ---------------------------------------------------------------- errors beside their control
def test_an_error_shows_beside_its_control_and_clears_the_stale_view(dash, monkeypatch):
    dash.select_query(1)
    assert dash.ranked_image.value and dash.summary.value
    plain = dash.session.distances

    def broken(metric="euclidean", rerank=False):
        if rerank: raise RuntimeError(f"re-ranking ran out of memory in {object()}")
        return plain(metric, rerank)
    monkeypatch.setattr(dash.session, "distances", broken)
    dash.rerank.value = True
    assert not dash.ok and dash.rerank_error.layout.display is None
    assert "out of memory" in dash.rerank_error.value and "object at 0x" not in dash.rerank_error.value
    others = [dash.query_error, dash.upload_error, dash.table_error, dash.sees_error, dash.error]
    assert [s.layout.display for s in others] == ["none"] * len(others)
    assert dash.ranked_image.value == b"" and dash.matches_image.value == b"" and dash.ap_label.value == ""
    assert dash.summary.value == "" and dash.ranking == [] and dash.page_table().empty
    dash.rerank.value = False
    assert dash.ok and dash.ranked_image.value and dash.summary.value and dash.rerank_error.layout.display == "none"
    dash.upload.value = ({"name": "notes.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello"),
                          "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert not dash.ok and dash.upload_error.layout.display is None and "notes.txt" in dash.error_message
    assert dash.rerank_error.layout.display == "none" and dash.error.layout.display == "none"


def test_the_ranked_list_saves_as_a_captioned_picture(dash):
    dash.select_query(0)
    picture, caption = dash.figure()
    assert picture.width >= Image.open(io.BytesIO(dash.ranked_image.value)).width
    assert "query #0" in caption and "green = same person" in caption
    assert "same person" in dash.legend.value and "another person" in dash.legend.value
    assert QUERY_COLOUR in dash.legend.value
    dash.save_box.children[0].click()                                    # save PNG: into the run's figures/
    saved = dash.last_saved
    assert dash.ok and saved.parent == dash.run_dir / "figures" and saved.suffix == ".png"
    assert Image.open(saved).height > picture.height                     # the picture under its caption
    dash.csv_box.children[0].click()                                     # save CSV: the whole query table
    table = pd.read_csv(dash.last_saved)
    assert list(table["query"]) == list(dash.table["query"]) and len(table) == len(dash.session.q_pids)
    assert table["ap"].tolist() == pytest.approx(dash.table["ap"].tolist(), nan_ok=True)


# ---------------------------------------------------------------- monitor
def _grid_png(path, colour, cells=4):
    "A make_grid-like picture of `cells` 32x16 images of one colour (2-pixel white padding)."
    im = Image.new("RGB", (cells * 18 + 2, 36), "white")
    for c in range(cells): im.paste(Image.new("RGB", (16, 32), colour), (2 + c * 18, 2))
    im.save(path)


@pytest.fixture
def gan_run(tmp_path):
    "A run folder as a two-stage GAN method leaves it: losses with a scheduled weight, sample grids per stage and epoch."
    run = tmp_path / "gan"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"method": "toy_stripes", "method_config": {"size": [32, 16]}}))
    pd.DataFrame({"stage": ["warmup"] * 3 + ["joint"] * 3, "epoch": [0, 1, 1, 0, 1, 1], "step": range(1, 7),
                  "gen": [4., 3., 2., 2., 1., .5], "dis_total": [1., 1., 1., .9, .8, 0.],
                  "lambda_prim": [0., 0., 0., .5, 1., 1.], "acc": .5, "lr_gen": .1}).to_csv(run / "losses.csv", index=False)
    colours = {("warmup", 0): "red", ("warmup", 1): "green", ("joint", 0): "blue", ("joint", 1): "yellow"}
    for k, ((stage, epoch), colour) in enumerate(colours.items()):
        path = run / "samples" / f"{stage}_e{epoch}.png"
        _grid_png(path, colour)
        os.utime(path, ns=(10 ** 18 - k * 10 ** 9,) * 2)          # file times in the opposite order
    return run


def _shown_colour(mon):
    im = np.asarray(Image.open(io.BytesIO(mon.sample_image.value)).convert("RGB"))
    return tuple(int(v) for v in np.median(im.reshape(-1, 3)[(im.reshape(-1, 3) != 255).any(1)], 0))


def test_monitor_picks_the_sample_grid_by_stage_and_epoch(gan_run):
    mon = MonitorDashboard(gan_run)
    assert mon.ok, mon.error_message
    assert (mon.shown_sample.stage, mon.shown_sample.epoch) == ("joint", 1)      # newest by training order
    assert mon.session.sample_path.name == "joint_e1.png" and _shown_colour(mon) == (255, 255, 0)
    assert list(mon.sample_stage.options) == ["warmup", "joint"] and list(mon.sample_epoch.options) == [0, 1]
    mon.sample_epoch.value = 0
    assert mon.shown_sample.path.name == "joint_e0.png" and _shown_colour(mon) == (0, 0, 255)
    mon.sample_stage.value = "warmup"
    assert mon.shown_sample.path.name == "warmup_e0.png" and _shown_colour(mon) == (255, 0, 0)   # the same epoch
    mon.sample_epoch.value = 1
    assert mon.shown_sample.path.name == "warmup_e1.png" and _shown_colour(mon) == (0, 128, 0)
    assert "stage warmup, epoch 1" in mon.sample_label.value
    _grid_png(gan_run / "samples" / "joint_e2.png", "black")                  # a chosen older grid stays on show
    assert mon.refresh() and mon.shown_sample.path.name == "warmup_e1.png"
    mon.sample_stage.value, mon.sample_epoch.value = "joint", 2
    _grid_png(gan_run / "samples" / "joint_e3.png", "white")                  # the newest on show follows the run
    assert mon.refresh() and mon.shown_sample.path.name == "joint_e3.png" and list(mon.sample_epoch.options) == [0, 1, 2, 3]


def test_monitor_captions_the_grid_rows_and_columns(gan_run):
    mon = MonitorDashboard(gan_run)
    shown = Image.open(io.BytesIO(mon.sample_image.value))
    raw = Image.open(mon.shown_sample.path)
    assert grid_shape(raw.width, raw.height, (32, 16)) == (1, 4)
    assert shown.size == captioned_grid(raw, (1, 4)).size and shown.height == 2 * raw.height + 18
    assert shown.width > 2 * raw.width                                    # a column of row captions at the left


def test_monitor_plots_loss_weights_apart_and_on_a_log_scale(gan_run):
    mon = MonitorDashboard(gan_run)
    assert [t.name for t in mon.figure.data] == ["gen", "dis_total"]
    assert [t.name for t in mon.weights.data] == ["lambda_prim"] and mon.weights_plot.layout.display is None
    assert list(mon.losses.options) == ["gen", "dis_total"]
    assert mon.figure.layout.yaxis.type == "linear"
    mon.log_scale.value = True
    assert mon.ok and mon.figure.layout.yaxis.type == "log" and "log scale" in mon.figure.layout.yaxis.title.text
    assert "dis_total (1)" in mon.scale_note.value                              # its zero is not drawn
    mon.stage.value = "warmup"
    assert mon.figure.layout.yaxis.type == "log" and list(mon.figure.data[0].x) == [1, 2, 3]
    mon.log_scale.value = False
    assert mon.figure.layout.yaxis.type == "linear" and mon.scale_note.value == ""
    assert "generator total" in mon.descriptions_html.value and "generator total" in mon.figure.data[0].hovertemplate
    assert "the weight of the prim loss" in mon.descriptions_html.value


def test_monitor_shows_a_bad_log_beside_refresh_and_clears_the_curves(gan_run):
    mon = MonitorDashboard(gan_run)
    assert mon.figure is not None and mon.plot.outputs
    (gan_run / "losses.csv").write_bytes(b'stage,step\n"unterminated,1\n')
    mon.refresh_button.click()
    assert not mon.ok and mon.refresh_error.layout.display is None and "losses.csv" in mon.refresh_error.value
    assert mon.error.layout.display == "none" and mon.plot_error.layout.display == "none"
    assert mon.figure is None and mon.plot.outputs == () and mon.weights_plot.layout.display == "none"
    assert "cannot be read" in mon.status.value
    assert mon.shown_sample is not None                                        # the samples are still fine
