"""Faults and bad input as a user meets them on the command line: each gives one clear line on stderr (exit 2), never a
traceback, a hang, a silently wrong result or lost files. Trained with the conformance toy (seconds per run)."""
import fcntl, json, os, shutil

import pytest

import toy_methods  # noqa: F401  (registers toy_stripes)
from reid_workbench.cli import main
from reid_workbench.data.synth import SynthConfig, write_synthreid


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "Two small SynthReID datasets (different seeds) and a finished toy run on the first."
    base = tmp_path_factory.mktemp("faults")
    a, _ = write_synthreid(base / "a", SynthConfig.tiny(ids=8), progress=False)
    b, _ = write_synthreid(base / "b", SynthConfig.tiny(ids=8, seed=1), progress=False)
    run = base / "run"
    assert main(["train", "--method", "toy_stripes", "--data", str(a), "--out", str(run), "--device", "cpu"]) == 0
    return {"a": a, "b": b, "run": run}


def cli(capsys, *argv) -> tuple[int, str]:
    "(exit code, stderr) of one command; stderr must be one line when it failed."
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    if code != 0: assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return code, err


def train(run, data, *extra): return ["train", "--method", "toy_stripes", "--data", data, "--out", run, "--device", "cpu", *extra]


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


# -- a run folder is bound to its data and config ----------------------------------------------------------------------

@pytest.mark.parametrize("change, named", [(("--seed", "1"), "trainer.seed: 0 -> 1"),
                                           (("--epochs", "3"), "method_config.epochs: 2 -> 3")])
def test_resume_with_other_settings_refuses_and_names_them(data, capsys, change, named):
    before = snapshot(data["run"])
    code, err = cli(capsys, *train(data["run"], data["a"], *change))
    assert code == 2 and named in err and "--accept-changes" in err and "--out" in err
    assert snapshot(data["run"]) == before


def test_resume_on_other_data_refuses(data, capsys):
    before = snapshot(data["run"])
    code, err = cli(capsys, *train(data["run"], data["b"]))
    assert code == 2 and "data.fingerprint" in err and snapshot(data["run"]) == before


def test_finished_run_rerun_is_a_no_op(data, capsys):
    before = snapshot(data["run"])
    assert cli(capsys, *train(data["run"], data["a"]))[0] == 0
    assert snapshot(data["run"]) == before


def test_accept_changes_continues_on_purpose(data, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    assert cli(capsys, *train(run, data["a"], "--epochs", "3", "--accept-changes"))[0] == 0
    assert json.loads((run / "config.json").read_text())["method_config"]["epochs"] == 3


def test_out_into_a_folder_that_is_not_a_run_refuses_and_keeps_its_files(data, capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("config.txt", "losses.csv", "metrics.json"): (mine / name).write_text("the user's own " + name)
    before = snapshot(mine)
    code, err = cli(capsys, *train(mine, data["a"]))
    assert code == 2 and "not a run folder" in err and snapshot(mine) == before


def test_a_second_writer_refuses(data, capsys, tmp_path):
    run = tmp_path / "busy"
    run.mkdir()
    with open(run / ".lock", "a") as f:                                # another process holds the run's lock
        fcntl.flock(f, fcntl.LOCK_EX)
        code, err = cli(capsys, *train(run, data["a"]))
    assert code == 2 and "another process is training this run" in err
    assert cli(capsys, *train(run, data["a"]))[0] == 0                  # released: trains


def test_orphaned_temporary_files_are_removed_on_the_next_start(data, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    orphan = run / "checkpoints" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    assert cli(capsys, *train(run, data["a"], "--epochs", "3", "--accept-changes"))[0] == 0
    assert not orphan.exists()


# -- malformed input gives one line ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[]", "3", '"run"', "null", "{", '{"method": 7, "method_config": {}, "num_classes": 2}',
                                  '{"method": "toy_stripes", "method_config": [], "num_classes": 2}',
                                  '{"method": "toy_stripes", "method_config": {}, "num_classes": "two"}'])
def test_malformed_config_json_of_any_type(data, capsys, tmp_path, text):
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    (run / "config.json").write_text(text)
    code, err = cli(capsys, "evaluate", run, "--device", "cpu")
    assert code == 2 and "config.json" in err


@pytest.mark.parametrize("preset", ["paper", "from_dict", "_private", "replace"])
def test_only_declared_presets(data, capsys, tmp_path, preset):
    code, err = cli(capsys, *train(tmp_path / "x", data["a"], "--preset", preset))
    assert code == 2 and f"no preset {preset!r}" in err and not (tmp_path / "x").exists()


def test_a_baseline_run_given_to_eval_codes(data, capsys, tmp_path):
    import torch
    from reid_workbench.core import save_checkpoint
    from reid_workbench.methods.baseline import Baseline, BaselineConfig
    run, config = tmp_path / "baseline", BaselineConfig.tiny(size=(64, 32))
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dict(method="baseline", method_config=config.to_dict(), num_classes=4,
                                                     data={"root": str(data["a"])})))
    save_checkpoint(dict(model=Baseline(config, 4).state_dict(), method="baseline"), run / "checkpoints" / "last.pt")
    code, err = cli(capsys, "eval-codes", run, "--device", "cpu")
    assert code == 2 and "not a Disentangler" in err and "toy_stripes" in err


def test_an_unreadable_image_stops_train_before_training(data, capsys, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data["a"], broken)
    victim = sorted((broken / "bounding_box_train").glob("*.jpg"))[3]
    victim.write_bytes(b"not a jpeg")
    code, err = cli(capsys, *train(tmp_path / "run", broken))
    assert code == 2 and victim.name in err and "unreadable" in err and not (tmp_path / "run").exists()


# -- OS faults, a read-only run folder, Ctrl-C -------------------------------------------------------------------------

def test_os_errors_are_one_line(data, capsys, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, err = cli(capsys, *train(tmp_path / "loop" / "run", data["a"]))
    assert code == 2 and "loop" in err and "symbolic links" in err
    code, err = cli(capsys, *train(tmp_path / ("x" * 300), data["a"]))
    assert code == 2 and "File name too long" in err


def test_evaluate_on_a_read_only_run_folder_prints_its_metrics(data, capsys, monkeypatch):
    import reid_workbench.runs as runs
    def read_only(path, text): raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(runs, "atomic_write_text", read_only)
    capsys.readouterr()
    assert main(["evaluate", str(data["run"]), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "mAP" in json.loads(out) and "could not save" in err and "Permission denied" in err


def test_ctrl_c_during_train_says_where_to_resume(data, capsys, tmp_path, monkeypatch):
    from reid_workbench.training import Trainer
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    def interrupt(self, stage, epoch): raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_run_epoch", interrupt)
    code, err = cli(capsys, *train(run, data["a"], "--epochs", "3", "--accept-changes"))
    assert code == 130 and "resumes from its last checkpoint" in err and str(run) in err


# -- checkpoint integrity ----------------------------------------------------------------------------------------------

def test_a_checkpoint_changed_after_it_was_written_is_refused(data, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    path = run / "checkpoints" / "last.pt"
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0x5A for b in raw[middle:middle + 64])     # flipped bytes inside the weights
    path.write_bytes(bytes(raw))
    code, err = cli(capsys, "evaluate", run, "--device", "cpu")
    assert code == 2 and "last.pt: damaged" in err
    code, err = cli(capsys, *train(run, data["a"]))
    assert code == 2 and "damaged" in err


@pytest.mark.parametrize("name", ["factors.csv", "keypoints/bounding_box_train.csv"])
def test_nothing_blocks_on_a_fifo_in_a_dataset(data, capsys, tmp_path, name):
    root = tmp_path / "data"
    shutil.copytree(data["a"], root)
    (root / name).unlink()
    os.mkfifo(root / name)
    code, err = cli(capsys, *train(tmp_path / "run", root))
    assert code == 2 and name.split("/")[-1] in err                 # one line naming the file, no hang


def test_nothing_blocks_on_a_fifo_where_a_file_is_expected(data, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    for name in ("config.json", "checkpoints/last.pt"):
        target = run / name
        target.unlink()
        os.mkfifo(target)
        code, err = cli(capsys, "evaluate", run, "--device", "cpu")
        assert code == 2 and name.split("/")[-1] in err
        target.unlink()
        shutil.copyfile(data["run"] / name, target)


# -- a table of bad input: each is one clear line (exit 2) ---------------------------------------------------------------

def _bad_inputs(data, tmp):
    "(name, argv, what the line must contain); tmp holds scratch files made here."
    a, run = data["a"], data["run"]
    (tmp / "file.txt").write_text("not a folder")
    (tmp / "empty").mkdir()
    (tmp / "nonrun").mkdir(); (tmp / "nonrun" / "notes.txt").write_text("mine")
    broken_kp = tmp / "kp"
    shutil.copytree(a, broken_kp)
    kp_file = next((broken_kp / "keypoints").iterdir())
    kp_file.write_text("this is not a keypoint table\n\x00\x01")
    return [
        ("train: no such data folder", ["train", "--data", tmp / "nowhere", "--out", tmp / "r1"], "nowhere"),
        ("train: data is a file", ["train", "--data", tmp / "file.txt", "--out", tmp / "r2"], "file.txt"),
        ("train: empty data folder", ["train", "--data", tmp / "empty", "--out", tmp / "r3"], "empty"),
        ("train: unknown method", ["train", "--method", "nope", "--data", a, "--out", tmp / "r4"], "unknown method"),
        ("train: --epochs 0", ["train", "--method", "toy_stripes", "--data", a, "--out", tmp / "r5", "--epochs", "0"], "epochs"),
        ("train: --epochs -3", ["train", "--method", "toy_stripes", "--data", a, "--out", tmp / "r6", "--epochs", "-3"], "epochs"),
        ("train: unknown device", ["train", "--method", "toy_stripes", "--data", a, "--out", tmp / "r7", "--device", "gpu9"], "gpu9"),
        ("train: out is a file", ["train", "--method", "toy_stripes", "--data", a, "--out", tmp / "file.txt"], "file.txt"),
        ("train: broken keypoint file", ["train", "--method", "toy_stripes", "--data", broken_kp, "--out", tmp / "r8"], kp_file.name),
        ("evaluate: not a run", ["evaluate", tmp / "nonrun"], "config.json"),
        ("evaluate: no such run", ["evaluate", tmp / "nowhere"], "nowhere"),
        ("evaluate: data is not a dataset", ["evaluate", run, "--data", tmp / "empty", "--device", "cpu"], "empty"),
        ("eval-codes: not SynthReID", ["eval-codes", run, "--data", tmp / "empty", "--device", "cpu"], "empty"),
        ("check-data: not a dataset", ["check-data", tmp / "nonrun"], "nonrun"),
        ("check-data: unknown format", ["check-data", a, "--format", "market9"], "market9"),
        ("synth: bad size", ["synth", "--out", tmp / "s1", "--size", "12xq"], "12xq"),
        ("synth: too few ids", ["synth", "--out", tmp / "s2", "--ids", "1"], "ids"),
        ("synth: out not empty", ["synth", "--out", tmp / "nonrun"], "--overwrite"),
        ("app: no such run", ["app", tmp / "nowhere"], "nowhere"),
    ]


def test_bad_input_table(data, capsys, tmp_path):
    failures = []
    for name, argv, expected in _bad_inputs(data, tmp_path):
        capsys.readouterr()
        try: code = main([str(a) for a in argv])
        except SystemExit as e: code = e.code                            # argparse's own usage errors
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1] if err else ""
        if code != 2 or "Traceback" in err or str(expected) not in last:
            failures.append(f"{name}: exit {code}, {err[-300:]!r}")
    assert not failures, "\n".join(failures)
