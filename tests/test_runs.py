"""The command line end to end on a small SynthReID: synth -> check-data -> train -> evaluate, resume, errors."""
import json
import subprocess
import sys

import pytest

from reid_workbench.data.synth import SynthConfig, write_synthreid


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "reid_workbench.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root, _ = write_synthreid(tmp_path_factory.mktemp("data") / "synth", SynthConfig.tiny(ids=20), progress=False)
    return root


def test_synth_and_check_data(tmp_path):
    out = tmp_path / "s"
    result = cli("synth", "--out", out, "--ids", 10, "--cams", 3, "--images-per-id", 4, "--size", "64x32", "--seed", 5)
    assert result.returncode == 0, result.stderr
    stats = json.loads(cli("check-data", out).stdout)
    assert stats["num_train_pids"] == 5 and stats["num_query_pids"] == 5 and stats["num_cams"] == 3
    assert stats["num_train_imgs"] == 20
    # a broken file: exit 2 with a message naming the file and the rule
    bad = out / "query" / "0001c1_000001_00.jpg"
    bad.write_bytes(b"x")
    result = cli("check-data", out)
    assert result.returncode == 2
    assert "0001c1_000001_00.jpg" in result.stderr and "Traceback" not in result.stderr


def test_train_evaluate_resume(tmp_path, synth_root):
    run = tmp_path / "run"
    result = cli("train", "--method", "baseline", "--data", synth_root, "--preset", "tiny", "--out", run,
                 "--epochs", 1, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"config.json", "losses.csv", "checkpoints"} <= {p.name for p in run.iterdir()}
    first = json.loads(result.stdout.strip().splitlines()[-1])
    assert first["steps"] > 0
    result = cli("evaluate", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)
    assert set(scores) >= {"rank1", "rank5", "rank10", "mAP", "mINP"}
    assert 0 <= scores["mINP"] <= scores["mAP"] + 1e-9 <= 1 + 1e-9 and scores["rank1"] <= scores["rank5"] <= scores["rank10"]
    assert json.loads((run / "evaluation.json").read_text())["mAP"] == scores["mAP"]
    result = cli("evaluate", run, "--device", "cpu", "--rerank")
    assert result.returncode == 0 and json.loads(result.stdout)["rerank"] is True
    assert (run / "evaluation_rerank.json").is_file()
    # a second train on the finished run resumes and trains nothing more
    again = cli("train", "--method", "baseline", "--data", synth_root, "--out", run, "--epochs", 1, "--device", "cpu")
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["steps"] == first["steps"]


def test_load_trained_never_fetches_imagenet_weights(tmp_path, synth_root):
    "A run whose config asks for ImageNet initialisation loads offline: the checkpoint replaces those weights."
    from reid_workbench.runs import train_run
    from reid_workbench.registry import load_trained
    run = tmp_path / "run"
    train_run("baseline", synth_root, run, epochs=1, device="cpu", progress=False, config_overrides=dict(P=4, K=4))
    info = json.loads((run / "config.json").read_text())
    info["method_config"]["pretrained"] = "imagenet"
    (run / "config.json").write_text(json.dumps(info))
    model = load_trained(run)
    assert model.config.pretrained == "imagenet"


def test_cli_errors_are_clear(tmp_path, synth_root):
    result = cli("evaluate", tmp_path / "nowhere")
    assert result.returncode == 2 and "nowhere: no such run directory" in result.stderr and "Traceback" not in result.stderr
    result = cli("train", "--method", "nomethod", "--data", synth_root, "--out", tmp_path / "r")
    assert result.returncode == 2 and "unknown method 'nomethod'" in result.stderr
    result = cli("train", "--method", "baseline", "--preset", "huge", "--data", synth_root, "--out", tmp_path / "r")
    assert result.returncode == 2 and "no preset 'huge'" in result.stderr
    run = tmp_path / "broken"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"method": "baseline", "method_config": {}, "num_classes": 3}))
    (run / "checkpoints" / "last.pt").write_bytes(b"garbage")
    result = cli("evaluate", run, "--data", synth_root)
    assert result.returncode == 2 and "last.pt" in result.stderr and "not a readable torch checkpoint" in result.stderr
