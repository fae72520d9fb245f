"""Tests of reid_workbench.data.datasets on tiny fake trees of every supported layout."""
import io, json, os, re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_workbench.data.datasets import (DATASET_FORMATS, DatasetError, DatasetWarning, ImageRecord, ReIDDataset,
                                          check_data, detect_format, load_dataset, relabel_train)
from reid_workbench.data.pose import write_keypoints_csv

def _jpeg_bytes(size=(4, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buf, "JPEG")
    return buf.getvalue()

JPEG = _jpeg_bytes()

def _png_bytes(size=(4, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (20, 130, 90)).save(buf, "PNG")
    return buf.getvalue()

PNG = _png_bytes()

def write(folder: Path, names, data=None):
    "Tiny images (JPEG or PNG by extension) named `names` in `folder`."
    folder.mkdir(parents=True, exist_ok=True)
    for n in names: (folder / n).write_bytes(data or (PNG if n.endswith(".png") else JPEG))

def market_names(pid, cams, start=0):
    return [f"{pid}_c{c}s1_{start + i:06d}_0{i % 10}.jpg" for i, c in enumerate(cams)]

def make_market(folder: Path):
    """A Market-1501 tree: train pids 5, 3, 9 (+ junk, + a distractor), query 11/12, gallery 11/12 + distractor + junk."""
    write(folder / "bounding_box_train", market_names("0005", [1, 2, 2]) + market_names("0003", [6, 1])
          + market_names("0009", [4]) + market_names("-1", [3]) + market_names("0000", [5]))
    write(folder / "query", market_names("0011", [1]) + market_names("0012", [2, 3]))
    write(folder / "bounding_box_test", market_names("0011", [4, 5], 10) + market_names("0012", [6], 20)
          + market_names("0000", [1, 2], 30) + market_names("-1", [3, 4, 5], 40))
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0junk")      # ignored: not an image
    (folder / "query" / "._0011_c1s1_000000_00.jpg").write_bytes(b"\0mac")    # ignored: hidden resource fork
    (folder / "gt_bbox").mkdir()                                              # ignored
    return folder

@pytest.fixture
def market(tmp_path):
    make_market(tmp_path / "Market-1501-v15.09.15")
    return tmp_path

# ---------------------------------------------------------------- Market-1501

def test_market_counts_relabel_junk_distractors(market):
    ds = load_dataset(market, "market1501")
    assert isinstance(ds, ReIDDataset) and ds.name == "market1501"
    assert ds.root == (market / "Market-1501-v15.09.15").absolute()
    assert ds.stats() == dict(num_train_pids=3, num_train_imgs=6, num_query_pids=2, num_query_imgs=3,
                              num_gallery_pids=3, num_gallery_imgs=5, num_cams=6)
    # train: sorted original pids 3, 5, 9 -> 0, 1, 2; junk and distractor gone
    assert ds.extra["train_pids"] == [3, 5, 9]
    by_name = {os.path.basename(r.path): (r.pid, r.camid) for r in ds.train}
    assert by_name["0003_c6s1_000000_00.jpg"] == (0, 5)
    assert by_name["0005_c1s1_000000_00.jpg"] == (1, 0)
    assert by_name["0009_c4s1_000000_00.jpg"] == (2, 3)
    assert all(isinstance(r, ImageRecord) for r in ds.train)
    assert sorted({r.pid for r in ds.train}) == [0, 1, 2]
    # query/gallery pids kept; distractor 0 kept in gallery, junk dropped everywhere
    assert [r.pid for r in ds.query] == [11, 12, 12]
    assert sorted(r.pid for r in ds.gallery) == [0, 0, 11, 11, 12]
    assert all("-1_" not in os.path.basename(r.path) for r in ds.train + ds.query + ds.gallery)
    assert all(os.path.isfile(r.path) and os.path.isabs(r.path) for r in ds.train + ds.query + ds.gallery)
    assert [r.path for r in ds.query] == sorted(r.path for r in ds.query)
    assert ds.keypoints is None

def test_market_root_is_the_folder_itself_and_auto(market):
    inner = market / "Market-1501-v15.09.15"
    assert detect_format(market) == detect_format(inner) == "market1501"
    a, b = load_dataset(market), load_dataset(inner)
    assert a.stats() == b.stats() and a.train == b.train

def test_market_range_checks_and_custom_escape(tmp_path):
    make_market(tmp_path / "market1501")
    write(tmp_path / "market1501" / "query", ["0013_c7s1_000001_00.jpg"])
    write(tmp_path / "market1501" / "bounding_box_test", ["0013_c1s1_000001_00.jpg"])
    with pytest.raises(DatasetError, match=r"query/0013_c7s1_000001_00\.jpg: camera c7 is out of range for "
                                           r"Market-1501 \(cameras c1\.\.c6\).*format='custom'"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path / "market1501", "custom")   # same tree, no range checks
    assert (13, 6) in {(r.pid, r.camid) for r in ds.query} and ds.stats()["num_cams"] == 7
    (tmp_path / "market1501" / "query" / "0013_c7s1_000001_00.jpg").rename(
        tmp_path / "market1501" / "query" / "1502_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match=r"query/1502_c1s1_000001_00\.jpg: pid 1502 is out of range .*0\.\.1501"):
        load_dataset(tmp_path, "market1501")

# ---------------------------------------------------------------- DukeMTMC-reID

def test_dukemtmc(tmp_path):
    duke = tmp_path / "DukeMTMC-reID"
    write(duke / "bounding_box_train", ["0005_c2_f0046985.jpg", "0005_c8_f0046999.jpg", "0001_c1_f0000001.jpg"])
    write(duke / "query", ["0010_c3_f0100000.jpg"])
    write(duke / "bounding_box_test", ["0010_c7_f0100100.jpg", "7140_c5_f0200000.jpg"])
    assert detect_format(tmp_path) == "dukemtmc"
    ds = load_dataset(tmp_path)
    assert ds.name == "dukemtmc"
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (1, 1), (1, 7)]
    assert ds.stats() == dict(num_train_pids=2, num_train_imgs=3, num_query_pids=1, num_query_imgs=1,
                              num_gallery_pids=2, num_gallery_imgs=2, num_cams=6)
    write(duke / "query", ["0011_c9_f0100000.jpg"])
    with pytest.raises(DatasetError, match=r"query/0011_c9_f0100000\.jpg: camera c9 .* DukeMTMC-reID \(cameras c1\.\.c8\)"):
        load_dataset(duke, "dukemtmc")
    (duke / "query" / "0011_c9_f0100000.jpg").unlink()
    write(duke / "query", ["0011_c1s1_000001_00.jpg"])   # a Market name is not a Duke name
    with pytest.raises(DatasetError, match=r"expected <pid>_c<cam>_f<frame>\.jpg"):
        load_dataset(duke, "dukemtmc")

# ---------------------------------------------------------------- CUHK03-NP

def test_cuhk03_np_labeled_vs_detected(tmp_path):
    np_root = tmp_path / "cuhk03-np"
    write(np_root / "labeled" / "bounding_box_train", ["0001_c1_1.png", "0001_c2_2.png", "0004_c1_1.png"])
    write(np_root / "labeled" / "query", ["0002_c1_1.png", "0002_c2_1.png"])
    write(np_root / "labeled" / "bounding_box_test", ["0002_c1_2.png", "0002_c2_2.png", "0003_c1_1.png"])
    write(np_root / "detected" / "bounding_box_train", ["0001_c1_1.png", "0004_c2_1.png"])
    write(np_root / "detected" / "query", ["0002_c2_1.png"])
    write(np_root / "detected" / "bounding_box_test", ["0002_c1_2.png"])
    assert detect_format(tmp_path) == "cuhk03"
    lab = load_dataset(tmp_path)                                  # labeled is the default
    det = load_dataset(tmp_path, "cuhk03", cuhk03_variant="detected")
    assert lab.name == det.name == "cuhk03"
    assert (lab.extra["variant"], det.extra["variant"]) == ("labeled", "detected")
    assert lab.stats() == dict(num_train_pids=2, num_train_imgs=3, num_query_pids=1, num_query_imgs=2,
                               num_gallery_pids=2, num_gallery_imgs=3, num_cams=2)
    assert det.stats() == dict(num_train_pids=2, num_train_imgs=2, num_query_pids=1, num_query_imgs=1,
                               num_gallery_pids=1, num_gallery_imgs=1, num_cams=2)
    assert all("/detected/" in r.path for r in det.train + det.query + det.gallery)
    assert check_data(tmp_path, cuhk03_variant="detected", progress=False) == det.stats()
    with pytest.raises(ValueError, match="cuhk03_variant='both'"):
        load_dataset(tmp_path, cuhk03_variant="both")
    write(np_root / "labeled" / "query", ["0002_c3_1.png"])
    with pytest.raises(DatasetError, match=r"query/0002_c3_1\.png: camera c3 is out of range for CUHK03-NP"):
        load_dataset(tmp_path)

# ---------------------------------------------------------------- MSMT17

def make_msmt17(folder: Path, v2=False):
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if v2 else ("train", "test")
    def entries(pid, cams, start=0):
        return [(f"{pid:04d}/{pid:04d}_{start + i:03d}_{c:02d}_0303morning_{i:04d}_0.jpg", pid) for i, c in enumerate(cams)]
    lists = dict(train=entries(0, [1, 15]) + entries(7, [3]) + entries(2, [10, 11]),
                 val=entries(7, [4], 50),
                 query=entries(0, [2]) + entries(1, [15]),
                 gallery=entries(0, [5, 6], 10) + entries(1, [14], 10) + entries(3, [1], 10))
    for split, rows in lists.items():
        image_dir = folder / (train_dir if split in ("train", "val") else test_dir)
        for rel, _ in rows: write(image_dir / os.path.dirname(rel), [os.path.basename(rel)])
        (folder / f"list_{split}.txt").write_text("".join(f"{rel} {pid}\n" for rel, pid in rows))
    return folder

def test_msmt17_list_files(tmp_path):
    make_msmt17(tmp_path / "MSMT17_V1")
    assert detect_format(tmp_path) == "msmt17"
    ds = load_dataset(tmp_path)
    assert ds.name == "msmt17" and ds.extra["version"] == "V1"
    # pid 0 is a real identity in MSMT17: kept in train, relabelled with the others (0, 2, 7 -> 0, 1, 2)
    assert ds.extra["train_pids"] == [0, 2, 7]
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 14), (1, 9), (1, 10), (2, 2)]
    assert sorted((r.pid, r.camid) for r in ds.query) == [(0, 1), (1, 14)]
    assert ds.stats() == dict(num_train_pids=3, num_train_imgs=5, num_query_pids=2, num_query_imgs=2,
                              num_gallery_pids=3, num_gallery_imgs=4, num_cams=9)
    assert all(os.path.isfile(r.path) for r in ds.train + ds.query + ds.gallery)
    with_val = load_dataset(tmp_path, msmt17_include_val=True)
    assert with_val.stats()["num_train_imgs"] == 6 and with_val.stats()["num_train_pids"] == 3
    # train and test pids are separate numberings: overlapping pid 0 is fine
    assert check_data(tmp_path, progress=False) == ds.stats()

def test_msmt17_v2_and_errors(tmp_path):
    folder = make_msmt17(tmp_path / "MSMT17_V2", v2=True)
    ds = load_dataset(tmp_path, "msmt17")
    assert ds.extra["version"] == "V2" and "mask_test_v2" in ds.query[0].path
    (folder / "list_query.txt").write_text("0000/0000_000_02_0303morning_0000_0.jpg 0\n\nbroken-line\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt, line 3: expected '<relative/path\.jpg> <pid>'"):
        load_dataset(tmp_path)
    (folder / "list_query.txt").write_text("0000/0000_000_16_0303morning_0000_0.jpg 0\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt, line 1: 0000/0000_000_16_0303morning_0000_0\.jpg: "
                                           r"camera c16 is out of range for MSMT17 \(cameras c1\.\.c15\)"):
        load_dataset(tmp_path)
    (folder / "list_query.txt").write_text("0000/0000_999_02_0303morning_0000_0.jpg 0\n")   # listed, not on disk
    load_dataset(tmp_path)                                                                   # lists only
    with pytest.raises(DatasetError, match=r"mask_test_v2/0000/0000_999_02_0303morning_0000_0\.jpg: missing image"):
        check_data(tmp_path, verify_images=False)
    (folder / "list_gallery.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing list_gallery\.txt - a MSMT17 dataset needs"):
        load_dataset(tmp_path)

# ---------------------------------------------------------------- custom

def test_custom_multi_digit_cameras_and_auto(tmp_path):
    write(tmp_path / "bounding_box_train", ["0002_c10s1_000451_03.jpg", "0002_c15s1_000452_03.jpg",
                                            "0001_c1_f0000001.jpg", "0000_c2s1_000001_00.jpg", "-1_c3s1_000001_00.jpg"])
    write(tmp_path / "query", ["0100_c12s2_000001_00.png", "0101_c3.jpg"])
    write(tmp_path / "bounding_box_test", ["0100_c11s2_000001_00.jpg", "0101_c4.JPG", "0000_c15_x.jpg"])
    assert detect_format(tmp_path) == "custom"
    ds = load_dataset(tmp_path)
    assert ds.name == "custom"
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (1, 9), (1, 14)]   # distractor and junk dropped
    assert sorted((r.pid, r.camid) for r in ds.query) == [(100, 11), (101, 2)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 14), (100, 10), (101, 3)]
    assert ds.stats()["num_cams"] == 7
    assert check_data(tmp_path, progress=False) == ds.stats()

def test_custom_consistency_warns_official_errors(tmp_path):
    write(tmp_path / "bounding_box_train", ["0001_c1s1_000001_00.jpg", "0002_c1s1_000001_00.jpg"])
    write(tmp_path / "query", ["0002_c1s1_000002_00.jpg", "0003_c2s1_000001_00.jpg"])
    write(tmp_path / "bounding_box_test", ["0002_c2s1_000003_00.jpg"])
    with pytest.warns(DatasetWarning) as record:
        stats = check_data(tmp_path, "custom", progress=False)
    messages = [str(w.message) for w in record]
    assert stats["num_query_imgs"] == 2
    assert any("query/0003_c2s1_000001_00.jpg: query pid 3 has no image in the gallery" in m for m in messages)
    assert any("bounding_box_train/0002_c1s1_000001_00.jpg: pid 2 is in train and in test" in m for m in messages)
    with pytest.raises(DatasetError, match="query pid 3 has no image in the gallery"):
        check_data(tmp_path, "custom", strict=True, progress=False)
    with pytest.raises(DatasetError, match="query pid 3 has no image in the gallery"):
        check_data(tmp_path, "market1501", progress=False)                 # an official format: an error
    (tmp_path / "query" / "0003_c2s1_000001_00.jpg").unlink()
    with pytest.raises(DatasetError, match=r"bounding_box_train/0002_c1s1_000001_00\.jpg: pid 2 is in train and in "
                                           r"test \(query/0002_c1s1_000002_00\.jpg\); .*disjoint, except distractor"):
        check_data(tmp_path, "market1501", progress=False)

# ---------------------------------------------------------------- SynthReID

def make_synthreid(folder: Path):
    names = dict(bounding_box_train=market_names("0001", [1, 2]) + market_names("0002", [3]),
                 query=market_names("0003", [1]), bounding_box_test=market_names("0003", [2, 3], 5))
    poses = {}
    for sub, files in names.items():
        write(folder / sub, files)
        split_poses = {n: np.full((18, 3), i + 1, np.float32) + len(poses) * 100 for i, n in enumerate(files)}
        poses.update({f"{sub}/{n}": p for n, p in split_poses.items()})
        write_keypoints_csv(folder / "keypoints" / f"{sub}.csv", split_poses)
    (folder / "synthreid.json").write_text(json.dumps({"version": 1, "num_cameras": 3}))
    pd.DataFrame({"pid": [1, 2, 3], "hair": ["short", "long", "none"]}).to_csv(folder / "factors.csv", index=False)
    return poses

def test_synthreid_keypoints_and_factors(tmp_path):
    poses = make_synthreid(tmp_path)
    assert detect_format(tmp_path) == "synthreid"
    ds = load_dataset(tmp_path)
    assert ds.name == "synthreid"
    assert ds.stats() == dict(num_train_pids=2, num_train_imgs=3, num_query_pids=1, num_query_imgs=1,
                              num_gallery_pids=1, num_gallery_imgs=2, num_cams=3)
    assert set(ds.keypoints) == {r.path for r in ds.train + ds.query + ds.gallery}
    for r in ds.train + ds.query + ds.gallery:
        key = f"{Path(r.path).parent.name}/{Path(r.path).name}"
        np.testing.assert_array_equal(ds.keypoints[r.path], poses[key])
        assert ds.keypoints[r.path].shape == (18, 3)
    assert isinstance(ds.extra["factors"], pd.DataFrame) and list(ds.extra["factors"]["hair"]) == ["short", "long", "none"]
    assert ds.extra["meta"]["num_cameras"] == 3
    # a missing keypoints row and a missing keypoints file are errors
    write_keypoints_csv(tmp_path / "keypoints" / "query.csv", {})
    with pytest.raises(DatasetError, match=r"query\.csv: no keypoints row for query/0003_c1s1_000000_00\.jpg"):
        load_dataset(tmp_path)
    (tmp_path / "keypoints" / "query.csv").unlink()
    with pytest.raises(DatasetError, match=r"missing keypoints/query\.csv - a SynthReID dataset needs"):
        load_dataset(tmp_path)

# ---------------------------------------------------------------- detection and options

def test_auto_detection_failure_lists_what_was_looked_for(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    msg = str(e.value)
    for expected in ("synthreid.json", "list_train.txt", "cuhk03-np/labeled/", "DukeMTMC-reID/",
                     "Market-1501-v15.09.15/", "bounding_box_train/, query/, bounding_box_test/"):
        assert expected in msg
    with pytest.raises(DatasetError, match="no such directory"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(ValueError, match="format='viper'"):
        load_dataset(tmp_path, "viper")

def test_options_are_checked(market):
    with pytest.raises(TypeError, match="cuhk03_variant do not apply to format 'market1501'"):
        load_dataset(market, cuhk03_variant="detected")
    assert set(DATASET_FORMATS) == {"market1501", "dukemtmc", "cuhk03", "msmt17", "custom", "synthreid"}

def test_relabel_train_sorted():
    recs = [ImageRecord("a", 30, 0), ImageRecord("b", 4, 1), ImageRecord("c", 30, 2), ImageRecord("d", 17, 0)]
    out, pids = relabel_train(recs)
    assert pids == [4, 17, 30] and [r.pid for r in out] == [2, 0, 2, 1] and [r.camid for r in out] == [0, 1, 2, 0]

# ---------------------------------------------------------------- check_data errors

def test_check_data_stats_and_missing_folder(market):
    inner = market / "Market-1501-v15.09.15"
    assert check_data(market, progress=False) == load_dataset(market).stats()
    assert check_data(market, sample=2, progress=False) == load_dataset(market).stats()
    (inner / "query").rename(inner / "queries")
    with pytest.raises(DatasetError, match=r"Market-1501-v15\.09\.15: missing query/ - a Market-1501 dataset needs "
                                           r"bounding_box_train/, query/, bounding_box_test/"):
        check_data(market)

def test_check_data_unparsable_filename(market):
    write(market / "Market-1501-v15.09.15" / "query", ["0002c1s1_000451_03.jpg"])
    with pytest.raises(DatasetError) as e:
        check_data(market, progress=False)
    assert str(e.value) == ("query/0002c1s1_000451_03.jpg: filename does not match the Market-1501 naming rule: "
                            "expected <pid>_c<cam>s<seq>_<frame>_<box>.jpg (e.g. 0002_c1s1_000451_03.jpg)")

@pytest.mark.parametrize("content, error", [(JPEG[:len(JPEG) // 2], "truncated"), (b"garbage" * 20, "cannot identify"),
                                            (b"", "cannot identify")], ids=["truncated", "garbage", "empty"])
def test_check_data_unreadable_image(market, content, error):
    name = "bounding_box_test/0012_c6s1_000020_00.jpg"
    (market / "Market-1501-v15.09.15" / name).write_bytes(content)
    assert load_dataset(market).stats()["num_gallery_imgs"] == 5           # parsing does not open images
    check_data(market, verify_images=False)                                  # nor does a check without verification
    with pytest.raises(DatasetError, match=rf"(?i)^{re.escape(name)}: unreadable image \(.*{error}"):
        check_data(market, progress=False)

def test_check_data_camera_out_of_range(market):
    write(market / "Market-1501-v15.09.15" / "bounding_box_test", ["0011_c10s1_000001_00.jpg"])
    with pytest.raises(DatasetError, match=r"^bounding_box_test/0011_c10s1_000001_00\.jpg: camera c10 is out of range "
                                           r"for Market-1501 \(cameras c1\.\.c6\)"):
        check_data(market)
    with pytest.raises(DatasetError, match=r"no Market-style dataset found"):   # custom reads the folder itself only
        check_data(market, "custom")
    assert check_data(market / "Market-1501-v15.09.15", "custom", progress=False)["num_cams"] == 7
