"""The dashboards driven headless: set widget values, click buttons, check the state, the numbers shown and the PNG
bytes. StripeColourToy (and variants: 8 overlapping parts, keypoint structure, a one-part code) on a tiny SynthReID,
a tiny baseline trained for one epoch for retrieval, and one-step DG-Net / IS-GAN runs when installed; which
dashboards `RunDashboards` lists (the registry's `applies_to`)."""
import datetime
import importlib.util
import json
import threading
import time

import ipywidgets as W
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reid_workbench.codes import Codes, StripeColourToy, swap
from reid_workbench.codes_metrics import swap_ground_truth
from reid_workbench.dashboards import (ALL, Dashboard, ErrorDashboard, ImageBank, ImagePicker,
                                       InterpolationDashboard, MonitorDashboard, PartShuffleDashboard,
                                       RetrievalDashboard, RunDashboards, SwapDashboard, outline_regions, png_array,
                                       png_bytes, register_dashboard)
from reid_workbench.dashboards import core as dashboards_core
from reid_workbench.data.synth import SynthConfig, load_factors, write_synthreid
from reid_workbench.metrics import evaluate_rank
from reid_workbench.registry import MethodInfo, load_trained
from reid_workbench.runs import train_run
from reid_workbench.viz import to_pil


# ---------------------------------------------------------------- models for the tests
EIGHT_PART_REGIONS = ((0, .25), (.25, .5), (.5, .75), (.75, 1), (0, .5), (.5, 1), (0, 1), (0, 1))


class EightPartToy(StripeColourToy):
    "Like IS-GAN: 8 appearance parts whose regions overlap (4 quarters, 2 halves, 2 globals); decode averages them."
    info = MethodInfo("eight_part_toy", structure_kind="tensor", num_parts=8, part_regions=EIGHT_PART_REGIONS)

    def encode(self, images):
        c = super().encode(images)                       # (B, 4, 3) quarter colours
        q = c.appearance
        parts = torch.cat([q, q[:, :2].mean(1, keepdim=True), q[:, 2:].mean(1, keepdim=True),
                           q.mean(1, keepdim=True), q.mean(1, keepdim=True)], 1)
        return Codes(parts, c.structure)

    def decode(self, codes):
        a = codes.appearance
        quarter = torch.stack([(a[:, k] + a[:, 4 + k // 2] + a[:, 6] + a[:, 7]) / 4 for k in range(4)], 1)
        return super().decode(Codes(quarter, codes.structure))


class PoseToy(StripeColourToy):
    "A pose method stand-in: the structure is 18 keypoints (the grey detail travels as a structure extra)."
    info = MethodInfo("pose_toy", structure_kind="keypoints", num_parts=4)

    def encode(self, images):
        c = super().encode(images)
        b, _, h, w = images.shape
        k = torch.arange(18, dtype=torch.float32)
        xy = torch.stack([w * (0.3 + 0.4 * (k % 2)), h * (0.1 + 0.8 * k / 17)], -1)
        xy = xy[None] + images.mean((1, 2, 3))[:, None, None]
        pose = torch.cat([xy, torch.ones(b, 18, 1)], -1)
        return Codes(c.appearance, pose, structure_extra={"detail": c.structure}, structure_kind="keypoints")

    def decode(self, codes):
        return super().decode(Codes(codes.appearance, codes.structure_extra["detail"]))


class OnePartToy(StripeColourToy):
    "A Disentangler with a one-part appearance code (the mean colour of the whole image)."
    info = MethodInfo("one_part_toy", structure_kind="tensor", num_parts=1)

    def encode(self, images):
        c = super().encode(images)
        return Codes(c.appearance.mean(1, keepdim=True), c.structure)

    def decode(self, codes):
        return super().decode(Codes(codes.appearance.expand(-1, 4, -1), codes.structure))


class BrokenDecoder(StripeColourToy):
    def decode(self, codes): raise RuntimeError("decoder exploded")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("dashboards")


@pytest.fixture(scope="module")
def synth(work):
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(ids=16), progress=False)
    return root


@pytest.fixture(scope="module")
def bank(synth):
    return ImageBank.from_dataset(synth, max_images=32, per_identity=4)


@pytest.fixture(scope="module")
def toy():
    return StripeColourToy()


@pytest.fixture(scope="module")
def baseline_run(work, synth):
    out = work / "baseline"
    train_run("baseline", synth, out, epochs=1, device="cpu", progress=False)
    return out


def _decode(model, codes):
    return np.asarray(to_pil(model.decode(codes)[0].detach()))


def _codes(model, bank, i):
    return model.encode(bank.images[i:i + 1])


def _upload(name, content, kind="image/png"):
    return ({"name": name, "type": kind, "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


# ---------------------------------------------------------------- image bank and picker
def test_image_bank_reads_synthreid_with_factors(bank, synth):
    assert len(bank) == 32 and bank.size == (128, 64) and bank.has_ground_truth
    counts = pd.Series(bank.pids).value_counts()
    assert counts.max() <= 4
    assert all(bank.pids[i] == bank.pids[3] for i in bank.select(pid=bank.pids[3]))
    factors = load_factors(synth)
    truth = swap_ground_truth(factors, bank.names[0], bank.names[9], (128, 64), 2, "a", 95)
    np.testing.assert_array_equal(np.asarray(bank.swap_truth(0, 9)), truth)


def test_image_picker_clicks_filters_and_pages(bank):
    picker = ImagePicker(bank, "x", per_page=6)
    seen = []
    picker.on_change(seen.append)
    picker.buttons[4].click()
    assert picker.value == picker._slots[4] == seen[-1]
    assert [b.button_style for b in picker.buttons].count("info") == 1
    picker.next_page.click()
    assert picker.page == 1 and picker._slots[0] == 6
    camera = bank.camids[10]
    picker.cam_filter.value = camera
    assert bank.camids[picker.value] == camera and all(bank.camids[i] == camera for i in picker.candidates)
    picker.cam_filter.value = ALL
    picker.pid_filter.value = bank.pids[20]
    assert bank.pids[picker.value] == bank.pids[20]
    assert picker.thumbs[0].value == png_bytes(bank.pil(picker._slots[0]))
    picker.index.value = 31                 # the index box selects outside the filter too
    assert picker.value == 31


def test_outline_regions_draws_every_overlapping_part():
    image = Image.new("RGB", (64, 128), "white")
    regions = EightPartToy.info.regions()
    out = np.asarray(outline_regions(image, regions, scale=3))
    colours = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in
               ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")}
    found = {tuple(p) for p in out.reshape(-1, 3)}
    assert colours <= found                 # all 8 outlines visible, the globals inset inside each other


# ---------------------------------------------------------------- swap
def test_swap_shows_generated_and_ground_truth(toy, bank):
    dash = SwapDashboard(toy, bank)
    assert dash.ok, dash.error_message
    a, b = dash.appearance_picker.value, dash.structure_picker.value
    assert bank.pids[a] != bank.pids[b]
    expect = _decode(toy, swap(_codes(toy, bank, a), _codes(toy, bank, b)))
    np.testing.assert_array_equal(png_array(dash.generated_image.value), expect)
    np.testing.assert_array_equal(png_array(dash.truth_image.value), np.asarray(bank.swap_truth(a, b)))
    np.testing.assert_array_equal(png_array(dash.appearance_image.value), np.asarray(bank.pil(a)))
    assert "SSIM" in dash.scores.value and "a's appearance changes the person by" in dash.scores.value
    before = dash.generated_image.value
    dash.structure_picker.buttons[5].click()
    b2 = dash.structure_picker.value
    assert dash.generated_image.value != before
    np.testing.assert_array_equal(png_array(dash.generated_image.value),
                                  _decode(toy, swap(_codes(toy, bank, a), _codes(toy, bank, b2))))
    dash.appearance_picker.index.value = b2              # a = b: the swap is the reconstruction
    np.testing.assert_array_equal(png_array(dash.generated_image.value), _decode(toy, _codes(toy, bank, b2)))


def test_swap_grid_is_n_by_m(toy, bank):
    dash = SwapDashboard(toy, bank)
    dash.grid_rows.value, dash.grid_cols.value = 2, 4
    dash.mode.value = "grid"
    assert dash.ok and dash.grid_shape == (2, 4)
    assert dash.single_view.layout.display == "none" and dash.grid_view.layout.display is None
    assert dash.grid_appearance[0] == dash.appearance_picker.value
    assert len(set(dash.grid_structure)) == 4
    for r, a in enumerate(dash.grid_appearance):
        for c, b in enumerate(dash.grid_structure):
            np.testing.assert_array_equal(np.asarray(dash.grid_images[r][c]),
                                          _decode(toy, swap(_codes(toy, bank, a), _codes(toy, bank, b))))
    grid = png_array(dash.grid_image.value)
    assert grid.shape[0] > 3 * 128 and grid.shape[1] > 5 * 64       # (N + 1) x (M + 1) cells with the donors
    dash.grid_cols.value = 1
    assert dash.grid_shape == (2, 1)


def test_swap_draws_keypoints_for_a_pose_method(bank):
    model = PoseToy()
    dash = SwapDashboard(model, bank)
    assert dash.ok, dash.error_message
    b = dash.structure_picker.value
    plain = np.asarray(bank.pil(b))
    shown = png_array(dash.structure_image.value)
    assert shown.shape == plain.shape and (shown != plain).any(1).any()     # the skeleton is drawn on it
    thumb = png_array(dash.structure_picker.thumbnail_png(b))
    assert (thumb != plain).any()
    assert dash.appearance_picker.thumbnail_png(b) == png_bytes(bank.pil(b))   # appearance thumbnails stay plain
    dash.mode.value = "grid"
    assert dash.ok and dash.grid_shape == (3, 3)


def test_a_failing_decoder_shows_a_message(bank):
    dash = SwapDashboard(BrokenDecoder(), bank)              # the first update fails inside the constructor
    assert not dash.ok and "decoder exploded" in dash.error_message
    dash.structure_picker.buttons[3].click()                 # and so do later ones, without raising
    assert "decoder exploded" in dash.error_message


# ---------------------------------------------------------------- interpolation
def test_interpolation_ends_strip_and_distances(toy, bank):
    dash = InterpolationDashboard(toy, bank, steps=5)
    dash.t_appearance.value = dash.t_structure.value = 0.0
    assert dash.wait() and dash.ok, dash.error_message
    a, b = dash.a_picker.value, dash.b_picker.value
    recon_a = _decode(toy, _codes(toy, bank, a))
    assert dash.generated_image.value == png_bytes(dash.strip_images[0])      # t = 0 is the a-end
    np.testing.assert_array_equal(png_array(dash.generated_image.value), recon_a)
    dash.t_appearance.value = dash.t_structure.value = 1.0
    np.testing.assert_array_equal(png_array(dash.generated_image.value), _decode(toy, _codes(toy, bank, b)))
    assert dash.generated_image.value == png_bytes(dash.strip_images[-1])
    # the distances: re-ID features (embed, L2-normalised) of the strip against the real images a and b
    feats = torch.nn.functional.normalize(toy.embed(bank.images[[a, b]]), dim=1)
    assert len(dash.distances) == 5 and list(dash.distances.t) == [0, .25, .5, .75, 1]
    assert dash.distances.to_a.iloc[0] < dash.distances.to_a.iloc[-1]
    assert dash.distances.to_b.iloc[-1] < dash.distances.to_b.iloc[0]
    first = torch.nn.functional.normalize(toy.embed(toy.decode(_codes(toy, bank, a))), dim=1)
    assert abs(float(torch.cdist(first, feats)[0, 0]) - dash.distances.to_a.iloc[0]) < 1e-4
    assert [tr.name for tr in dash.figure.data] == ["distance to a", "distance to b"]
    np.testing.assert_allclose(dash.figure.data[0].y, dash.distances.to_a)
    assert dash.plot.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["name"] == "distance to a"


def test_interpolation_moves_each_code_on_its_own(toy, bank):
    dash = InterpolationDashboard(toy, bank, steps=3, background=False)
    a, b = dash.a_picker.value, dash.b_picker.value
    ca, cb = _codes(toy, bank, a), _codes(toy, bank, b)
    dash.t_structure.value = 0.0
    dash.strip_mode.value = "appearance"        # appearance a -> b, structure held at a's
    np.testing.assert_array_equal(np.asarray(dash.strip_images[-1]), _decode(toy, swap(cb, ca)))
    dash.t_appearance.value = 0.0
    dash.strip_mode.value = "structure"         # structure a -> b, appearance held at a's
    np.testing.assert_array_equal(np.asarray(dash.strip_images[-1]), _decode(toy, swap(ca, cb)))
    dash.t_appearance.value, dash.t_structure.value = 1.0, 0.0
    np.testing.assert_array_equal(png_array(dash.generated_image.value), _decode(toy, swap(cb, ca)))
    dash.steps.value = 4
    assert len(dash.strip_images) == 4 and dash.ok


def test_interpolation_of_keypoints(bank):
    dash = InterpolationDashboard(PoseToy(), bank, steps=3, background=False)
    assert dash.ok, dash.error_message
    dash.t_structure.value = 0.3
    assert dash.ok and len(dash.strip_images) == 3


# ---------------------------------------------------------------- part shuffle
def test_part_shuffle_changes_only_the_toggled_rows(toy, bank):
    dash = PartShuffleDashboard(toy, bank)
    assert len(dash.part_toggles) == 4 and dash.ok
    assert dash.generated_image.value == dash.reconstruction_image.value      # nothing toggled: the reconstruction
    recon = png_array(dash.reconstruction_image.value)
    for k, (top, bottom) in enumerate(dash.regions):
        dash.set_parts([k])
        rows = np.flatnonzero((png_array(dash.generated_image.value) != recon).any((1, 2)))
        assert len(rows) and rows.min() >= top * 128 and rows.max() < bottom * 128, (k, rows.min(), rows.max())
    dash.none_button.click()
    assert dash.selected_parts == [] and dash.generated_image.value == dash.reconstruction_image.value
    dash.all_button.click()                      # every part from b: b's appearance on a's structure
    a, b = dash.a_picker.value, dash.b_picker.value
    np.testing.assert_array_equal(png_array(dash.generated_image.value),
                                  _decode(toy, swap(_codes(toy, bank, b), _codes(toy, bank, a))))
    outlined = png_array(dash.a_image.value)
    assert outlined.shape == (384, 192, 3)       # the inputs are shown 3x with the regions outlined


def test_part_shuffle_with_eight_overlapping_parts(bank):
    dash = PartShuffleDashboard(EightPartToy(), bank)
    assert len(dash.part_toggles) == 8 and dash.ok
    assert dash.regions == list(EIGHT_PART_REGIONS)           # the model's declared regions, not equal stripes
    assert dash.generated_image.value == dash.reconstruction_image.value
    recon = png_array(dash.reconstruction_image.value)
    dash.part_toggles[4].value = True            # the upper half
    rows = np.flatnonzero((png_array(dash.generated_image.value) != recon).any((1, 2)))
    assert rows.max() < 64
    dash.set_parts([6])                          # a global part changes the whole image
    rows = np.flatnonzero((png_array(dash.generated_image.value) != recon).any((1, 2)))
    assert rows.min() < 32 and rows.max() >= 96


# ---------------------------------------------------------------- retrieval
@pytest.fixture(scope="module")
def retrieval(baseline_run, synth):
    return RetrievalDashboard(load_trained(baseline_run), synth)


def test_retrieval_ap_matches_evaluate_rank(retrieval):
    dash = retrieval
    assert dash.ok, dash.error_message
    assert dash.sees_button.layout.display == "none"          # the baseline is no Disentangler
    s = dash.session
    for i in range(len(s.q_pids)):
        dash.query.value = i
        one = evaluate_rank(s.distances()[i:i + 1], s.q_pids[i:i + 1], s.g_pids, s.q_camids[i:i + 1], s.g_camids)
        assert dash.current_ap == pytest.approx(one["mAP"], abs=1e-12)
        assert f"AP {one['mAP']:.3f}" in dash.ap_label.value
        assert len(dash.ranking) == 10 and dash.ranked_distances == sorted(dash.ranked_distances)
    full = evaluate_rank(s.distances(), s.q_pids, s.g_pids, s.q_camids, s.g_camids)
    assert s.scores().ap.mean() == pytest.approx(full["mAP"])
    assert f"mAP {full['mAP']:.1%}" in dash.summary.value


def test_retrieval_toggles_change_the_list(retrieval):
    dash = retrieval
    dash.rerank.value = False
    dash.query.value = 3
    plain = (list(dash.ranking), list(dash.ranked_distances), dash.ranked_image.value)
    dash.rerank.value = True
    assert dash.ok and dash.query.value == 3
    assert dash.ranked_distances != plain[1] and dash.ranked_image.value != plain[2]
    assert "re-ranked" in dash.summary.value
    dash.rerank.value = False
    assert dash.ranked_distances == plain[1]
    cosine = dash.session.rank_query(3, len(plain[0]), "cosine")          # normalised features: the same order,
    assert list(cosine.indices) == plain[0]                                # so the page has no metric toggle
    assert not hasattr(dash, "metric")
    dash.topk.value = 4
    assert len(dash.ranking) == 4
    dash.topk.value = 10


def test_retrieval_sorting_puts_the_worst_query_first(retrieval):
    dash = retrieval
    dash.sort_by.value = "ap_asc"
    scores = dash.session.scores(*dash.key)
    worst = scores.sort_values("ap").iloc[0]
    assert dash.table.ap.iloc[0] == scores.ap.min()
    assert dash.query_index == int(worst.query) == dash.query.value
    assert dash.query.options[0][1] == int(worst.query)                # the list follows the table
    assert dash.row_buttons[0].description.endswith(str(int(worst.query)))   # the table's first row is the worst query
    dash.sort_by.value = "ap_desc"
    assert dash.table.ap.iloc[0] == scores.ap.max()
    dash.worst_button.click()
    assert dash.query_index == int(worst.query)
    dash.sort_by.value = "index"
    assert list(dash.table["query"]) == list(range(len(dash.session.q_pids)))


def test_retrieval_upload(retrieval):
    dash = retrieval
    j = 5
    content = open(dash.session.dataset.gallery[j].path, "rb").read()
    dash.upload.value = _upload("mine.jpg", content, "image/jpeg")
    assert dash.ok, dash.error_message
    assert dash.query_index is None and dash.ranking[0] == j and dash.ranked_distances[0] < 1e-4
    assert dash.current_ap is None and "mine.jpg" in dash.ap_label.value
    assert dash.back_button.layout.display is None
    assert dash.upload.value == ()              # emptied, so the same file can be uploaded again
    shown = dash.ranked_image.value
    dash.upload.value = _upload("notes.txt", b"hello, not an image", "text/plain")      # bad input: a message
    assert not dash.ok and "not an image" in dash.error_message and "notes.txt" in dash.error_message
    assert shown and dash.ranked_image.value == b""            # a failed update leaves no stale list behind
    dash.back_button.click()
    assert dash.ok and dash.query_index is not None


def test_retrieval_shows_what_a_disentangler_sees(toy, synth):
    dash = RetrievalDashboard(toy, synth, flip=False)
    assert dash.ok and dash.sees_button.layout.display != "none"
    dash.query.value = 2
    dash.sees_button.click()
    assert dash.ok, dash.error_message
    assert dash.sees_image.value and dash.sees_image.layout.display is None
    s = dash.session
    q = s.model_input(s.thumb(s.dataset.query[2].path))[None]
    hit = s.model_input(s.thumb(s.dataset.gallery[dash.ranking[0]].path))[None]
    expect = to_pil(toy.decode(swap(toy.encode(q), toy.encode(hit)))[0])
    np.testing.assert_array_equal(np.asarray(dash.model_sees), np.asarray(expect))
    dash.query.value = 3                                           # a new query clears the picture
    assert dash.sees_image.value == b""


def test_per_query_scores_equal_evaluate_rank_query_by_query():
    rng = np.random.default_rng(0)
    d = rng.random((30, 60)).astype(np.float32)
    d[:, 7] = d[:, 8]                                               # ties rank by gallery index
    qp, gp = rng.integers(1, 8, 30), rng.integers(0, 8, 60)
    qc, gc = rng.integers(0, 3, 30), rng.integers(0, 3, 60)
    s = evaluate_rank(d, qp, gp, qc, gc, chunk_size=7)["per_query"]     # what the retrieval browser shows
    for i in range(30):
        valid = ((gp == qp[i]) & (gc != qc[i])).any()
        assert np.isnan(s.ap[i]) == (not valid)
        if valid:
            assert s.ap[i] == pytest.approx(evaluate_rank(d[i:i + 1], qp[i:i + 1], gp, qc[i:i + 1], gc)["mAP"])


# ---------------------------------------------------------------- monitor
def _write_log(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)


def test_monitor_refresh_reads_appended_rows(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [dict(stage="warmup", epoch=0, step=s, loss=1 / s, id=2 / s, acc=0.1 * s, lr_model=0.1) for s in range(1, 4)]
    _write_log(run / "losses.csv", rows)
    mon = MonitorDashboard(run)
    assert mon.ok and len(mon.session.log) == 3
    assert [t.name for t in mon.figure.data] == ["loss", "id"]        # viz.loss_columns: no lr, no accuracy
    assert "no sample grid yet" in mon.sample_label.value
    assert "3 log rows" in mon.status.value
    rows += [dict(stage="joint", epoch=0, step=s, loss=1 / s, id=2 / s, acc=0.1 * s, lr_model=0.1) for s in range(4, 7)]
    _write_log(run / "losses.csv", rows)
    (run / "samples").mkdir()
    to_pil(torch.rand(3, 8, 8), "unit").save(run / "samples" / "joint_e0.png")
    mon.refresh_button.click()
    assert len(mon.session.log) == 6 and list(mon.figure.data[0].x) == [1, 2, 3, 4, 5, 6]
    assert mon.sample_image.value == (run / "samples" / "joint_e0.png").read_bytes()
    assert [o[1] for o in mon.stage.options] == [ALL, "warmup", "joint"]
    mon.stage.value = "joint"
    assert list(mon.figure.data[0].x) == [4, 5, 6]
    mon.losses.value = ("id",)
    assert [t.name for t in mon.figure.data] == ["id"]
    assert mon.refresh() is False                                             # nothing new
    time.sleep(0.01)
    to_pil(torch.rand(3, 8, 8), "unit").save(run / "samples" / "joint_e1.png")
    assert mon.refresh() and mon.session.sample_path.name == "joint_e1.png"


def test_monitor_auto_refresh_follows_a_live_log(tmp_path):
    run = tmp_path / "live"
    run.mkdir()
    rows = [dict(stage="s", epoch=0, step=1, loss=1.0)]
    _write_log(run / "losses.csv", rows)
    mon = MonitorDashboard(run, interval=0.1)
    mon.auto_refresh.value = True
    try:
        for s in range(2, 5):
            rows.append(dict(stage="s", epoch=0, step=s, loss=1.0 / s))
            _write_log(run / "losses.csv", rows)
            deadline = time.monotonic() + 10
            while len(mon.session.log) < s and time.monotonic() < deadline: time.sleep(0.05)
            assert len(mon.session.log) == s
    finally:
        mon.auto_refresh.value = False
    assert mon._timer is None and mon.ok
    mon.start_auto_refresh(0.02)                 # started from code: one timer chain, not two
    try:
        time.sleep(0.3)
        timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.function == mon._tick]
        assert len(timers) <= 1 and mon.auto_refresh.value
    finally:
        mon.stop_auto_refresh()
    assert not mon.auto_refresh.value and mon._timer is None


def test_monitor_shows_bad_folders_as_messages(tmp_path):
    mon = MonitorDashboard(tmp_path / "missing")
    assert not mon.ok and "no such run directory" in mon.error_message
    run = tmp_path / "empty"
    run.mkdir()
    mon = MonitorDashboard(run)
    assert mon.ok and "no losses.csv yet" in mon.status.value and mon.figure is None
    (run / "losses.csv").write_bytes(b'stage,step\n"unterminated,1\n')
    mon.refresh_button.click()
    assert not mon.ok and "losses.csv" in mon.error_message


# ---------------------------------------------------------------- runs
def test_from_run_shows_what_is_wrong(tmp_path, baseline_run):
    missing = SwapDashboard.from_run(tmp_path / "nowhere")
    assert isinstance(missing, ErrorDashboard) and "no such run directory" in missing.error_message
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text(json.dumps(json.loads((baseline_run / "config.json").read_text())))
    dash = RetrievalDashboard.from_run(no_ckpt)
    assert isinstance(dash, ErrorDashboard) and "last.pt" in dash.error_message and "not found" in dash.error_message
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    assert "not valid JSON" in InterpolationDashboard.from_run(bad_json).error_message
    not_gen = PartShuffleDashboard.from_run(baseline_run)
    assert isinstance(not_gen, ErrorDashboard) and "needs a Disentangler" in not_gen.error_message
    moved = RetrievalDashboard.from_run(baseline_run, data_root=tmp_path / "gone")
    assert "gone: no such dataset folder" in moved.error_message
    assert isinstance(MonitorDashboard.from_run(baseline_run), MonitorDashboard)
    assert isinstance(Dashboard.from_run(tmp_path / "nowhere"), ErrorDashboard)


def test_run_dashboards_of_a_baseline(baseline_run):
    dashes = RunDashboards(baseline_run)
    assert list(dashes.dashboards) == ["monitor", "retrieval"]        # no generative dashboard: no Disentangler
    assert dashes["monitor"].ok and dashes["retrieval"].ok and len(dashes["monitor"].session.log) >= 1
    assert tuple(dashes.tabs.titles) == ("monitor", "retrieval") and len(dashes.tabs.children) == 2


def test_run_dashboards_without_a_model(tmp_path, baseline_run):
    run = tmp_path / "training"                                         # a run that has no checkpoint yet
    run.mkdir()
    (run / "config.json").write_text((baseline_run / "config.json").read_text())
    dashes = RunDashboards(run)
    assert list(dashes.dashboards) == ["monitor", "model"]
    assert "last.pt" in dashes["model"].error_message and dashes.tabs.titles[1] == "model (unavailable)"


def test_run_dashboards_list_no_part_shuffle_for_a_one_part_code(tmp_path, synth):
    (tmp_path / "run").mkdir()
    one = RunDashboards(tmp_path / "run", synth, model=OnePartToy(), max_images=8)
    assert list(one.dashboards) == ["monitor", "retrieval", "swap", "interpolation"]
    assert all(d.ok for d in one.dashboards.values()), {n: d.error_message for n, d in one.dashboards.items()}
    parts = RunDashboards(tmp_path / "run", synth, model=PoseToy(), max_images=8)   # 4 declared parts
    assert list(parts.dashboards)[-1] == "part shuffle" and len(parts["part shuffle"].part_toggles) == 4


class ProbeDashboard(Dashboard):
    "A dashboard plugged in from outside the package: it shows how many images the run's shared CodeBank holds."
    title = "probe"

    def __init__(self, codes):
        super().__init__()
        self.codes = codes
        self.widget = W.HTML(f"{len(codes)} images")

    @classmethod
    def for_run(cls, run):
        return cls(run.codes)


class BrokenBuild(Dashboard):
    title = "broken"

    @classmethod
    def for_run(cls, run):
        raise RuntimeError("cannot build")


def test_a_registered_dashboard_appears_only_for_the_models_it_applies_to(tmp_path, synth, monkeypatch):
    monkeypatch.setattr(dashboards_core, "_DASHBOARDS", dict(dashboards_core._DASHBOARDS))   # undone after the test
    register_dashboard(ProbeDashboard, applies_to=lambda model: isinstance(model, PoseToy), order=45)
    (tmp_path / "run").mkdir()
    pose = RunDashboards(tmp_path / "run", synth, model=PoseToy(), max_images=8)
    assert list(pose.dashboards) == ["monitor", "retrieval", "swap", "pose transfer", "interpolation", "probe", "part shuffle"]
    assert pose["probe"].ok and pose["probe"].codes is pose["swap"].codes           # one CodeBank for the run
    other = RunDashboards(tmp_path / "run", synth, model=EightPartToy(), max_images=8)
    assert "probe" not in other.dashboards and "part shuffle" in other.dashboards
    register_dashboard(BrokenBuild, applies_to=lambda model: True)                   # a tab that says why
    broken = RunDashboards(tmp_path / "run", synth, model=OnePartToy(), max_images=8)["broken"]
    assert isinstance(broken, ErrorDashboard) and "RuntimeError: cannot build" in broken.error_message
    with pytest.raises(TypeError, match="not a Dashboard"):
        register_dashboard(object, applies_to=lambda model: True)


@pytest.mark.parametrize("method, parts", [("dgnet", 4), ("isgan", 8)])   # DG-Net's 4 stripes, IS-GAN's 8 parts
def test_run_dashboards_of_a_generative_run(work, synth, method, parts):
    if importlib.util.find_spec(f"reid_workbench.methods.{method}") is None: pytest.skip(f"{method} is not installed")
    out = work / method
    train_run(method, synth, out, epochs=1, device="cpu", progress=False,
              trainer_overrides=dict(max_steps_per_epoch=1, log_every=1))
    dashes = RunDashboards(out, max_images=16)
    assert list(dashes.dashboards) == ["monitor", "retrieval", "swap", "interpolation", "part shuffle"]
    assert all(d.ok for d in dashes.dashboards.values()), {n: d.error_message for n, d in dashes.dashboards.items()}
    shuffle = dashes["part shuffle"]
    assert len(shuffle.part_toggles) == parts
    assert shuffle.generated_image.value == shuffle.reconstruction_image.value
    shuffle.part_toggles[0].value = True
    assert shuffle.ok and shuffle.generated_image.value != shuffle.reconstruction_image.value
    swap_dash = dashes["swap"]
    swap_dash.structure_picker.buttons[2].click()
    assert swap_dash.ok and swap_dash.truth_image.value
    interp = dashes["interpolation"]
    interp.t_appearance.value = 0.0
    interp.t_structure.value = 0.0
    assert interp.wait() and interp.generated_image.value == png_bytes(interp.strip_images[0])
    if (out / "samples").is_dir(): assert dashes["monitor"].session.sample_path is not None
    retrieval = dashes["retrieval"]
    retrieval.sees_button.click()
    assert retrieval.ok and retrieval.sees_image.value
