"""`compare_runs` / `summarize` / `reid-workbench compare` on tiny runs: the table holds what evaluate_run and eval_codes
give, reuses what the run folders hold, folds seeds into mean and sample standard deviation, takes the papers' numbers
from MethodInfo, and refuses bad input with one line."""
import json
import math
import os
from dataclasses import replace

import pandas as pd
import pytest

import toy_methods  # noqa: F401  (registers toy_stripes, a fast trainable Disentangler)
from reid_workbench.cli import main
from reid_workbench.codes_metrics import eval_codes
from reid_workbench.compare import compare_runs, paper_columns, summarize, to_html, to_markdown
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.registry import MethodInfo, available_methods, method_info, register_method
from reid_workbench.runs import evaluate_run, train_run

PAPER = {"dataset": "Market-1501", "source": "Table 9 of a made-up paper", "rank1": 61.5, "mAP": 42.25,
         "rank1_rerank": 70.0, "mAP_rerank": 55.5, "note": "a test"}


class PaperToy(toy_methods.StripeToy):
    "toy_stripes under another name, with paper numbers."
    name, info = "", None


register_method(replace(method_info("toy_stripes"), name="toy_paper", model=PaperToy, paper_results=PAPER))
CODES = dict(num_pairs=4, diversity_ids=2)


def _train(method, root, out, seed=0):
    overrides = method_info(method).smoke | {"epochs": 1}
    train_run(method, root, out, seed=seed, device="cpu", progress=False, verify_images=False,
              config_overrides=overrides, trainer_overrides=dict(max_steps_per_epoch=1))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A tiny SynthReID with a baseline (seed 0), toy_stripes at seeds 0 and 1, and toy_paper; runs/<seed>/<method>."
    work = tmp_path_factory.mktemp("compare")
    root, _ = write_synthreid(work / "synthreid", SynthConfig.tiny(ids=8, size=(64, 32)), progress=False)
    out = {"root": root, "work": work}
    for key, method, seed in (("baseline", "baseline", 0), ("toy0", "toy_stripes", 0), ("toy1", "toy_stripes", 1),
                              ("paper", "toy_paper", 0)):
        out[key] = _train(method, root, work / "runs" / f"seed{seed}" / method, seed)
    return out


def _compare(runs, names, **kw):
    kw = dict(device="cpu", progress=False, reid_run=runs["baseline"]) | CODES | kw
    return compare_runs([runs[n] for n in names], **kw)


def test_table_holds_what_evaluate_run_and_eval_codes_give(runs):
    table = _compare(runs, ["baseline", "toy0"]).set_index("method")
    for name, method in (("baseline", "baseline"), ("toy0", "toy_stripes")):
        for rerank, suffix in ((False, ""), (True, " re-ranked")):
            fresh = evaluate_run(runs[name], rerank=rerank, device="cpu")
            for label, key in (("rank-1", "rank1"), ("mAP", "mAP"), ("mINP", "mINP")):
                assert table.loc[method, label + suffix] == pytest.approx(fresh[key], abs=1e-12), (name, label + suffix)
    codes = eval_codes(runs["toy0"], runs["root"], reid_run=runs["baseline"], device="cpu", **CODES)
    for label, key in (("person L1", "swap_l1_person"), ("person L1 ref a", "swap_l1_person_ref_a"),
                       ("person SSIM ref b", "swap_ssim_person_ref_b"), ("image L1", "swap_l1"),
                       ("image SSIM", "swap_ssim"), ("identity retention", "retention_appearance"), ("FID", "fid"),
                       ("recon SSIM", "recon_ssim"), ("swap pairs", "num_pairs")):
        assert table.loc["toy_stripes", label] == pytest.approx(codes[key], rel=1e-6, abs=1e-9), label
    assert table.loc["toy_stripes", "person beats refs"] == ("yes" if codes["swap_beats_both_person"] else "no")
    log = pd.read_csv(runs["toy0"] / "losses.csv")
    assert table.loc["toy_stripes", "train s"] == round(float(log["seconds"].max()), 1)
    assert table.loc["toy_stripes", "seed"] == 0 and table.loc["baseline", "preset"] == "smoke + 1 change"


def test_a_non_generative_run_has_blank_generation_columns(runs):
    table = _compare(runs, ["baseline", "toy0"])
    generation = [c for c in table.columns if c.startswith(("person ", "image ")) or c in ("FID", "identity retention", "recon SSIM")]
    assert len(generation) >= 16 and table.loc[0, generation].isna().all()
    assert table.loc[1, generation].notna().all()
    assert "codes" not in table.attrs["provenance"][0]


def test_reuses_what_the_run_folders_hold_and_recomputes_what_is_stale(runs):
    _compare(runs, ["baseline", "toy0"])                                  # everything recorded
    files = [runs[n] / f for n in ("baseline", "toy0") for f in ("evaluation.json", "evaluation_rerank.json")]
    files.append(runs["toy0"] / "disentanglement.json")
    before = {f: f.stat().st_mtime_ns for f in files}
    again = compare_runs([runs["baseline"], runs["toy0"]], reid_run=runs["baseline"], device="cpu", progress=False)
    assert {v for p in again.attrs["provenance"] for k, v in p.items() if k != "run"} == {"reused"}
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # other swap pairs: the codes again, the evaluations still reused
    other = _compare(runs, ["toy0"], num_pairs=3)
    assert other.attrs["provenance"][0] == {"run": str(runs["toy0"]), "evaluation": "reused",
                                            "evaluation_rerank": "reused", "codes": "computed"}
    assert other.loc[0, "swap pairs"] == 3
    # an evaluation older than the run's last checkpoint (the run trained further since) is made again
    earlier = (runs["toy0"] / "checkpoints" / "last.pt").stat().st_mtime - 10
    os.utime(runs["toy0"] / "evaluation.json", (earlier, earlier))
    stale = _compare(runs, ["toy0"], rerank=False, codes=False)
    assert stale.attrs["provenance"][0]["evaluation"] == "computed"
    assert [c for c in stale.columns if "re-ranked" in c and not c.startswith("paper")] == []
    assert "person L1" not in stale.columns


def test_two_seeds_give_mean_and_sample_standard_deviation(runs):
    table = _compare(runs, ["baseline", "toy0", "toy1"])
    summary = summarize(table).set_index("method")
    assert list(summary.index) == ["baseline", "toy_stripes"]
    assert (summary.loc["toy_stripes", "runs"], summary.loc["toy_stripes", "seeds"]) == (2, "0, 1")
    for col in ("rank-1", "mAP re-ranked", "person L1", "FID"):
        a, b = table.loc[1, col], table.loc[2, col]
        assert summary.loc["toy_stripes", col] == pytest.approx((a + b) / 2, abs=1e-12)
        assert summary.loc["toy_stripes", f"{col} sd"] == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-12)
    assert math.isnan(summary.loc["baseline", "rank-1 sd"])                # one run: no spread
    # by hand: 0.2, 0.4, 0.9 -> mean 0.5, sample sd sqrt((0.09 + 0.01 + 0.16) / 2)
    hand = pd.DataFrame({"run": list("abc"), "method": ["m"] * 3, "seed": [0, 1, 2], "preset": ["tiny"] * 3,
                         "mAP": [0.2, 0.4, 0.9], "image beats refs": ["no", "yes", "no"]})
    s = summarize(hand).iloc[0]
    assert s["mAP"] == pytest.approx(0.5) and s["mAP sd"] == pytest.approx(math.sqrt(0.13))
    assert s["image beats refs"] == "1/3"
    assert "0.500 ± 0.361" in to_markdown(summarize(hand))


def test_the_paper_columns_come_from_method_info(runs):
    table = _compare(runs, ["paper", "toy0"]).set_index("method")
    for key, label in (("rank1", "paper rank-1"), ("mAP", "paper mAP"), ("rank1_rerank", "paper rank-1 re-ranked"),
                       ("mAP_rerank", "paper mAP re-ranked")):
        assert table.loc["toy_paper", f"{label} (Market-1501)"] == pytest.approx(PAPER[key] / 100)
        assert pd.isna(table.loc["toy_stripes", f"{label} (Market-1501)"])   # no paper numbers: blank
    assert table.loc["toy_paper", "paper source"] == "Table 9 of a made-up paper; a test"
    text = to_markdown(summarize(table.reset_index()))
    assert "paper rank-1 (Market-1501)" in text and "0.615" in text and "toy_paper: Table 9 of a made-up paper" in text
    assert "<h3>Re-identification</h3>" in to_html(table.reset_index())
    # the library's methods: each generative paper gives Market-1501 rank-1 and mAP; the baseline's is not among them
    for name in available_methods():
        if not method_info(name).model.__module__.startswith("reid_workbench.methods."): continue
        results = method_info(name).paper_results
        if name == "baseline": assert results == {}
        else: assert results["dataset"] == "Market-1501" and {"rank1", "mAP", "source"} <= set(results)
    assert paper_columns("isgan")["paper mAP (Market-1501)"] == pytest.approx(0.871)


def test_cli_prints_the_summary_and_writes_the_csvs(runs, tmp_path, capsys):
    out = tmp_path / "cmp" / "table.csv"
    code = main(["compare", str(runs["baseline"]), str(runs["toy0"]), str(runs["toy1"]), "--reid-run", str(runs["baseline"]),
                 "--pairs", "4", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "**Re-identification**" in printed.out and "| toy_stripes |" in printed.out and " ± " in printed.out
    assert "**Swaps on the person region**" in printed.out
    per_run, summary = pd.read_csv(out), pd.read_csv(tmp_path / "cmp" / "table_summary.csv")
    assert list(per_run["method"]) == ["baseline", "toy_stripes", "toy_stripes"]
    assert list(summary["method"]) == ["baseline", "toy_stripes"] and list(summary["runs"]) == [1, 2]
    assert per_run.loc[1, "mAP"] == pytest.approx(json.loads((runs["toy0"] / "evaluation.json").read_text())["mAP"])
    assert summary.loc[1, "mAP"] == pytest.approx(per_run.loc[1:2, "mAP"].mean())
    assert (tmp_path / "cmp" / "table.md").read_text() in printed.out
    assert "3 run(s)" in printed.err and "wrote" in printed.err
    code = main(["compare", str(runs["baseline"]), "--no-rerank", "--no-codes", "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0 and "re-ranked" not in printed.out and "Swaps" not in printed.out


def test_bad_input_is_one_clear_line(runs, tmp_path, capsys):
    other, _ = write_synthreid(tmp_path / "other", SynthConfig.tiny(ids=4, size=(64, 32), seed=3), progress=False)
    elsewhere = _train("toy_stripes", other, tmp_path / "elsewhere")
    (tmp_path / "empty").mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((runs["toy0"] / "config.json").read_text())
    cases = [([str(tmp_path / "nowhere")], "nowhere: no such run directory"),
             ([str(tmp_path / "empty")], "is not a run directory"),
             ([str(unfinished)], "no checkpoints/last.pt"),
             ([str(runs["toy0"]), str(elsewhere)], "runs trained on different datasets"),
             ([str(runs["toy0"]), str(runs["toy0"])], "named twice"),
             ([str(runs["toy0"]), "--reid-run", str(tmp_path / "empty")], "is not a run directory"),
             ([str(runs["toy0"]), "--out", str(tmp_path / "t.txt")], "--out names a .csv file")]
    for argv, words in cases:
        code = main(["compare", *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err, (argv, err)
        assert err.startswith("reid-workbench compare: error: ")
