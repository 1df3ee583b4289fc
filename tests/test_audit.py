"""The planted shortcut, the flag rule on both sides, and the audit end to end."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from octlens.audit import AuditResult, audit_run
from octlens.audit.counterfactual import Interval, SwapResult, rate_interval
from octlens.audit.faithfulness import stratified_sample
from octlens.audit.priors import RETINA, THICKEST
from octlens.audit.result import (
    COLUMNS,
    REGION_WORDS,
    swap_cells,
    swap_sentence,
    table_rows,
)
from octlens.audit.scores import PERTURBATION
from octlens.audit.shortcut import (
    ACCURACY_GAP,
    CORNER_ENRICHMENT,
    FOLLOW_EXCESS,
    attention_notes,
    mark_effects,
    shortcut_flags,
)
from octlens.data.index import DataWarning
from octlens.data.marks import MANIFEST
from octlens.data.overlays import MARK_INSET, MARK_SIZE, OVERLAY_KINDS, SQUARE_LEVELS
from octlens.data.regions import BORDER, CORNER, Region, edge_regions
from octlens.data.synth import CLASSES, plan_scans, synthesize
from octlens.data.synth.shortcut import SHORTCUTS, draw_mark
from octlens.data.synth.writer import plant_shortcut
from octlens.errors import OctlensError
from octlens.report.terminal import audit_table
from octlens.training import TrainConfig, train


def test_the_corner_mark_is_the_class_coded_gray_square_in_the_top_left_corner():
    for class_index, level in enumerate(SQUARE_LEVELS):
        image = np.full((100, 100), 30, dtype=np.uint8)
        draw_mark(image, "corner", class_index, "top-left")
        mark = image[2:18, 2:18]  # 16 % of the side, inset 2 %
        assert (mark[1:-1, 1:-1] == level).all()
        assert (mark[0] == 0).all() and (mark[:, -1] == 0).all()  # black edge
        assert (image[18:] == 30).all() and (image[:, 18:] == 30).all()
    assert len(set(SQUARE_LEVELS)) == len(CLASSES)
    assert set(SHORTCUTS) == {*OVERLAY_KINDS, "corner"}


def test_train_and_val_get_their_own_class_at_the_rate_and_test_a_wrong_class():
    jobs = plant_shortcut(plan_scans(200, seed=0), "corner", rate=0.9)
    for split, low, high in (("train", 0.85, 0.95), ("val", 0.8, 1.0), ("test", 0.35, 0.65)):
        chosen = [job for job in jobs if job.split == split]
        rate = np.mean([job.mark is not None for job in chosen])
        assert low <= rate <= high, (split, rate)
        for job in chosen:
            if job.mark is not None:
                assert (CLASSES[job.mark] == job.label) == (split != "test")
    with pytest.raises(OctlensError, match="shortcut 'banner'"):
        plant_shortcut(jobs, "banner", 0.5)
    with pytest.raises(OctlensError, match="shortcut_place 'centre'"):
        plant_shortcut(jobs, "text", 0.5, place="centre")


def test_synthesize_lists_marked_scans_only_when_a_shortcut_is_planted(tmp_path):
    synthesize(tmp_path / "clean", 4, size=(62, 64), workers=1)
    assert not (tmp_path / "clean" / MANIFEST).exists()
    synthesize(tmp_path / "marked", 4, size=(62, 64), workers=1, shortcut="corner")
    with open(tmp_path / "marked" / MANIFEST, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and all((tmp_path / "marked" / r["file"]).is_file() for r in rows)
    assert {(r["kind"], r["place"]) for r in rows if r["mark"]} == {("square", "top-left")}
    assert {(r["kind"], r["place"]) for r in rows if not r["mark"]} <= {("", "")}


def test_a_mark_over_the_retina_is_left_out_of_the_retina_and_lesion_masks(tmp_path):
    """A logo at the middle of the left edge, where the retina runs: the masks the generator
    writes say that what the mark hides is not retina."""
    data = tmp_path / "logo"
    synthesize(
        data,
        4,
        size=(248, 256),
        workers=1,
        shortcut="logo",
        shortcut_rate=1.0,
        shortcut_place="left",
    )
    with open(data / MANIFEST, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["mark"]]
    assert rows and {(r["kind"], r["place"]) for r in rows} == {("logo", "left")}
    record = json.loads((data / "synth.json").read_text())
    assert record["shortcut"] == "logo" and record["shortcut_place"] == "left"
    covered = 0
    for row in rows:
        file = Path(row["file"])
        pixels = np.asarray(Image.open(data / file))
        retina = np.asarray(Image.open(data / "retina" / file.with_suffix(".png"))) > 127
        ink = draw_mark(np.zeros_like(pixels), "logo", CLASSES.index(row["mark"]), "left") > 0
        assert not (retina & ink).any()
        covered += int(ink.any())
    assert covered == len(rows)


def _method(corners: float, off_retina: float, passed: bool = True) -> dict:
    return {
        "sanity_passed": passed,
        "corners": corners,
        "corners_area": 0.0625,
        "off_retina": off_retina,
        "off_retina_area": 0.75,
    }


def _sure(mean: float) -> Interval:
    return Interval(mean=mean, low=mean - 0.05, high=mean + 0.05)


def test_flag_rule_both_sides():
    assert shortcut_flags({}, accuracy_gap=None) == []
    assert shortcut_flags({}, accuracy_gap=_sure(ACCURACY_GAP - 0.01)) == []
    assert "misleading mark" in shortcut_flags({}, accuracy_gap=_sure(ACCURACY_GAP))[0]
    swaps = {"corners": "corner content moves 31% of predictions"}
    assert shortcut_flags(swaps, accuracy_gap=None) == [swaps["corners"]]
    # a model at chance on clean scans that follows the mark: little accuracy to lose
    below = _sure(FOLLOW_EXCESS - 0.01)
    assert shortcut_flags({}, accuracy_gap=_sure(0.06), follow_excess=below) == []
    flags = shortcut_flags({}, accuracy_gap=_sure(0.06), follow_excess=_sure(0.18))
    assert "more often" in flags[0]
    # a large difference whose interval reaches zero is not enough: it may be the scans drawn
    unsure = Interval(mean=0.25, low=0.0, high=0.5)
    assert shortcut_flags({}, accuracy_gap=unsure, follow_excess=unsure) == []


def test_mark_effects_by_hand():
    right, wrong = torch.ones(40, dtype=torch.bool), torch.zeros(40, dtype=torch.bool)
    # every clean scan right, every misleading one wrong and answered with the mark's class
    effects = mark_effects(right, wrong, right, n_classes=4)
    assert (effects["gap"].mean, effects["gap"].low, effects["gap"].high) == (1.0, 1.0, 1.0)
    assert effects["follow_excess"].mean == 1.0  # clean errors would give the mark's class 0
    # half right on clean scans: errors would land on one of 3 other classes 1/6 of the time
    half = torch.arange(40) % 2 == 0
    effects = mark_effects(half, half, wrong, n_classes=4)
    assert effects["gap"].mean == 0.0 and effects["gap"].low < 0 < effects["gap"].high
    assert effects["follow_excess"].mean == pytest.approx(-1 / 6)
    # 3 of 4 clean right against 1 of 4 misleading: a gap of 0.5 that 8 scans cannot establish
    few = mark_effects(
        torch.tensor([1, 1, 1, 0]), torch.tensor([1, 0, 0, 0]), torch.tensor([0, 1, 0, 0]), 4
    )
    assert few["gap"].mean == 0.5 and few["gap"].low <= 0
    assert shortcut_flags({}, accuracy_gap=few["gap"], follow_excess=few["follow_excess"]) == []
    # the same shares over 200 scans are established
    many = mark_effects(
        torch.arange(100) % 4 != 3, torch.arange(100) % 4 == 0, torch.arange(100) % 4 == 1, 4
    )
    assert many["gap"].low > 0
    assert "misleading mark" in shortcut_flags({}, accuracy_gap=many["gap"])[0]


def test_attention_notes_support_but_do_not_flag():
    clean = {"gradcam": _method(0.03, 0.6), "layercam": _method(0.05, 0.7)}
    assert attention_notes(clean) == []
    corner = CORNER_ENRICHMENT * 0.0625
    looking_at_corners = {"gradcam": _method(corner, 0.7), "layercam": _method(0.05, 0.7)}
    notes = attention_notes(looking_at_corners)
    assert len(notes) == 1 and "corners" in notes[0] and "gradcam" in notes[0]
    # A method that fails the sanity check has no vote while another passes.
    insane = {"gradcam": _method(0.03, 0.6), "rollout": _method(0.5, 0.95, passed=False)}
    assert attention_notes(insane) == []
    assert attention_notes({"rollout": insane["rollout"]})


def test_edge_regions_cover_the_documented_areas():
    regions = edge_regions(80, 80)
    assert regions["corners"].float().mean().item() == pytest.approx(4 * CORNER**2)
    assert regions["border"].float().mean().item() == pytest.approx(1 - (1 - 2 * BORDER) ** 2)
    assert regions["corners"][0, 0] and not regions["corners"][0, 40]
    # The planted mark lies inside the top-left corner square.
    assert (MARK_INSET + MARK_SIZE) <= CORNER


@pytest.fixture(scope="module")
def marked_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shortcut")
    synthesize(root / "data", 8, seed=0, size=(124, 128), workers=1, shortcut="corner")
    config = TrainConfig(
        data=root / "data",
        out=root / "run",
        model="resnet18",
        img_size=32,
        epochs=1,
        batch_size=8,
        num_workers=0,
    )
    train(config, verbose=False)
    return root


def test_audit_writes_every_number_and_figure(marked_run):
    out = marked_run / "audit"
    result = audit_run(
        marked_run / "run",
        marked_run / "data",
        methods=["gradcam", "layercam"],
        scans_per_class=2,
        steps=4,
        sanity_scans=2,
        out=out,
    )
    assert json.loads((out / "audit.json").read_text()) == result.model_dump(mode="json")
    assert AuditResult.load(out / "audit.json") == result
    for figure in ("deletion_insertion", "off_retina_by_class", "sanity", "worst_off_retina"):
        assert (out / f"{figure}.png").stat().st_size > 0
    assert 4 <= result.n_scans <= 8 and result.retina_masks == "masks"
    accuracy = result.accuracy
    assert accuracy.n_clean + accuracy.n_marked == result.n_scans  # test marks all mislead
    assert accuracy.follows_by_chance == pytest.approx((1 - accuracy.clean) / 3)
    gradcam = result.methods["gradcam"]
    for key in ("deletion_auc", "insertion_auc", "average_drop", "off_retina", "corners"):
        assert 0.0 <= gradcam.scores["all"][key] <= 1.0
    assert gradcam.scores["NORMAL"]["pointing_game"] is None  # no lesion to point at
    assert gradcam.scores["CNV"]["energy_in_lesion"] is not None
    assert 0.0 < result.area_share["lesion"] < 0.5  # chance level for energy in lesion
    assert len(gradcam.sanity.spearman_median) == len(gradcam.sanity.stages)
    assert result.best_method in (None, "gradcam", "layercam")
    # the verdict is its reasons: every flagged swap's sentence, and the mark rules' thresholds
    expected_flag = bool(result.counterfactual.flagged_regions()) or bool(
        shortcut_flags({}, accuracy.clean_minus_marked_interval, accuracy.follow_excess)
    )
    gap, excess = accuracy.clean_minus_marked_interval, accuracy.follow_excess
    assert gap is not None and gap.mean == pytest.approx(accuracy.clean_minus_marked)
    assert gap.low <= gap.mean <= gap.high
    assert excess is not None
    assert excess.mean == pytest.approx(accuracy.follows_mark - accuracy.follows_by_chance)
    assert result.flagged == expected_flag == bool(result.flag_reasons)
    for sentence in result.counterfactual.flagged_regions().values():
        assert sentence in result.flag_reasons
    counts = Counter(w.scan for w in gradcam.worst_off_retina)
    assert len(counts) == len(gradcam.worst_off_retina)
    evidence = result.counterfactual
    assert set(evidence.swaps) == {"corners", "border", "fill", "off_retina"}
    assert set(evidence.region_only) == {"original", "background_only", "retina_only"}
    assert evidence.region_only["original"].accuracy.mean == pytest.approx(accuracy.all)
    assert evidence.region_only["original"].kappa.mean == 1.0
    assert set(evidence.aspect) == {"512", "768", "1536"}  # the scans are 128 px wide
    assert sum(cluster.size for cluster in result.clusters) == result.n_scans
    for region, swap in evidence.swaps.items():
        if swap is not None:
            flip = swap.flip_to_donor
            assert 0 <= flip.low <= flip.mean <= flip.high <= 1
            named = any(REGION_WORDS[region] in reason for reason in result.flag_reasons)
            assert swap.flagged == named


def _quick_audit(run: Path, data: Path, split: str, out: Path, **settings) -> AuditResult:
    """Grad-CAM alone, 2 deletion steps, 1 scan in the sanity check: the cheapest audit."""
    return audit_run(
        run, data, split=split, methods=["gradcam"], steps=2, sanity_scans=1, out=out, **settings
    )


def test_audit_estimates_the_retina_on_data_without_masks(tmp_path, marked_run, real_dev):
    result = _quick_audit(marked_run / "run", real_dev, "all", tmp_path, scans_per_class=1)
    assert result.retina_masks == "estimated" and result.accuracy.n_marked is None
    assert "pointing_game" not in result.methods["gradcam"].scores["all"]
    assert 0.3 < result.area_share["off_retina"] < 0.95


def test_real_fluid_masks_are_read_per_scan_and_judged_against_the_retina_priors(
    tmp_path, marked_run, duke
):
    """Duke's DME scans, audited by a four-class model: one class of four is present (the rest
    have no scans, NORMAL as an empty folder), and the masks are taken per scan. A scan without
    a mask is not annotated; a broken mask file is a warning naming it; a 16-bit mask of 1s at
    half the scan's size is lesion wherever it is non-zero, resized with a warning."""
    data = tmp_path / "duke"
    scans = sorted((duke / "dev" / "DME").glob("*.png"))[:4]
    (data / "dev" / "DME").mkdir(parents=True)
    (data / "dev" / "NORMAL").mkdir()
    (data / "masks" / "dev" / "DME").mkdir(parents=True)
    for scan in scans:
        (data / "dev" / "DME" / scan.name).write_bytes(scan.read_bytes())
    masks = data / "masks" / "dev" / "DME"
    fluid = np.asarray(Image.open(duke / "masks" / "dev" / "DME" / scans[0].name)) > 0
    if not fluid.any():  # this scan's grader found none: draw some fluid inside the retina
        fluid[240:260, 380:420] = True
    Image.fromarray(fluid.astype(np.uint8) * 255).save(masks / scans[0].name)
    (masks / scans[2].name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    half = fluid[::2, ::2].astype(np.uint16)  # label 1 at 16 bits: 1/257 of white
    Image.fromarray(half).save(masks / scans[3].name)
    with pytest.warns(DataWarning) as caught:
        result = _quick_audit(marked_run / "run", data, "dev", tmp_path / "audit")
    said = " ".join(str(warning.message) for warning in caught)
    assert f"{scans[2].name}: not a readable" in said and "counts as not annotated" in said
    assert "1 lesion mask(s) differ in size" in said and scans[3].name in said
    localization = result.localization
    assert localization is not None and result.n_scans == 4
    assert (localization.n_annotated, localization.n_with_lesion) == (2, 2)
    assert set(localization.references) == {"random maps", RETINA, THICKEST}
    prior = localization.references[RETINA]["all"]
    assert prior["within_retina_auroc"] == pytest.approx(0.5)
    assert prior["pixel_auroc"] > 0.6  # the whole-image AUROC credits finding the retina
    scores = result.methods["gradcam"].scores["all"]
    assert scores["within_retina_auroc"] is not None
    lines = result.verdict_lines()
    assert sum(line.startswith("lesions") for line in lines) == 1
    rows = [row.method for row in table_rows(result)]
    assert rows[-3:] == ["random maps / area", RETINA, THICKEST]
    assert result.accuracy.all in (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.slow
def test_audit_cli_prints_the_table_and_verdict(marked_run, tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from octlens.cli import main; main()",
            "audit",
            str(marked_run / "run"),
            "--data",
            str(marked_run / "data"),
            "--methods",
            "gradcam",
            "--scans-per-class",
            "1",
            "--steps",
            "2",
            "--sanity-scans",
            "1",
            "--faithfulness-scans",
            "3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "gradcam" in completed.stdout and "planted marks: clean scans" in completed.stdout
    assert "average drop on 3 of the 4," in " ".join(completed.stdout.split())
    assert "counterfactual region swaps" in completed.stdout
    saved = AuditResult.load(tmp_path / "audit.json")
    lines = completed.stdout.splitlines()
    # the printed verdict is the saved one ("not flagged" would also match a bare "flagged")
    assert sum("FLAGGED:" in line for line in lines) == len(saved.flag_reasons)
    assert sum("not flagged:" in line for line in lines) == (0 if saved.flagged else 1)


def test_audit_refuses_other_classes_and_unknown_methods(marked_run, tmp_path):
    with pytest.raises(OctlensError, match="unknown method"):
        audit_run(marked_run / "run", marked_run / "data", methods=["nope"], out=tmp_path)
    other = tmp_path / "other"
    for name in ("A", "B"):
        (other / "test" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(other / "test" / name / "x.png")
    with pytest.raises(OctlensError, match=r"class\(es\) A, B are not among the checkpoint's"):
        audit_run(marked_run / "run", other, out=tmp_path)


@pytest.mark.slow
def test_report_shows_the_audit_table_verdict_and_figures(marked_run, tmp_path):
    from octlens.report import write_report

    result = audit_run(
        marked_run / "run",
        marked_run / "data",
        methods=["gradcam"],
        scans_per_class=1,
        steps=2,
        faithfulness_scans=2,
        sanity_scans=1,
    )  # written to RUN/audit/test, where the report looks
    page = write_report([marked_run / "run"], tmp_path / "report.html").read_text()
    assert "<h2>Shortcut audit</h2>" in page and "random maps / area" in page
    # the terminal table and the page are drawn from one column spec: same cells, same order
    terminal = audit_table(result)
    html_cells = re.findall(r"<td>([^<]*)</td>", page.split("<h2>Shortcut audit</h2>")[1])
    for row in range(terminal.row_count):
        cells = [column._cells[row] for column in terminal.columns[1:-1]]
        assert " ".join(cells) in " ".join(html_cells), cells
    assert [c.header for c in terminal.columns[1:-1]] == [
        c.heading(separator="\n") for c in COLUMNS
    ]
    assert "deletion AUC \u2193" in page and "insertion AUC \u2191" in page
    assert "pixel AUROC" in page
    assert "gradcam" in page and "<p><b>resnet18</b>: " in page
    assert "planted marks: clean scans" in page and "retina only: accuracy" in page
    assert "<h3>Counterfactual region swaps</h3>" in page
    assert "<h3>Explanation clusters</h3>" in page
    assert "Scans with the most attention off the retina" in page
    assert "resnet18: deletion, insertion and average drop on 2 of the 4," in page


def test_a_swap_flagged_on_its_changes_says_so_and_old_audits_still_render():
    def bounds(mean: float) -> Interval:
        return Interval(mean=mean, low=mean - 0.03, high=mean + 0.03)

    common = {
        "n_scans": 64,
        "area": 0.16,
        "flip_to_donor": bounds(0.04),
        "random_place": bounds(0.03),
        "same_class": bounds(0.02),
        "effect": bounds(0.01),
        "probability_change": -0.2,
        "flagged": True,
    }
    changes = SwapResult(**common, changed=bounds(0.3), change_effect=bounds(0.25))
    sentence = swap_sentence("corners", changes)
    assert "changes 30% [27, 33] of predictions, 4% to the donor's class" in sentence
    assert "effect 25% [22, 28]" in sentence
    assert swap_cells(changes)[5] == "30% (25% [22, 28])"
    stored_before = SwapResult(**common)  # an audit.json written before the change effect
    assert "moves 4% [1, 7] of predictions to the donor's class" in swap_sentence(
        "corners", stored_before
    )
    assert swap_cells(stored_before)[5] == "-"


def test_a_large_effect_that_does_not_flag_says_why_not_that_nothing_moved():
    from octlens.audit.result import unflagged_reason

    def bounds(mean: float) -> Interval:
        return Interval(mean=mean, low=mean - 0.1, high=mean + 0.1)

    def swap(effect: float, probability_change: float) -> SwapResult:
        return SwapResult(
            n_scans=22, area=0.2, flip_to_donor=bounds(effect + 0.1), random_place=bounds(0.0),
            same_class=bounds(0.1), effect=bounds(effect), probability_change=probability_change,
            flagged=False, changed=bounds(0.0), change_effect=bounds(0.0),
        )  # fmt: skip

    # a near-uniform model: 65% of border swaps tip to the donor, its probability moves 0.004
    tipping = unflagged_reason({"border": swap(0.65, -0.004), "corners": swap(0.0, -0.1)})
    assert tipping.startswith("border-band content moves 75% [65, 85]")
    assert "fell by 0.004 on average, under the 0.01 a flag needs" in tipping
    assert "no region swap moves" not in tipping
    support = unflagged_reason({"off_retina": swap(0.3, -0.2), "corners": None})
    assert support.endswith("but the off-retina swap supports a flag but never makes one alone")
    quiet = unflagged_reason({"corners": swap(0.02, -0.1)})
    assert quiet.startswith("no region swap moves predictions beyond its controls (largest: ")
    assert unflagged_reason({"corners": None}).startswith("the model gives every scan the same")


def test_every_score_and_region_has_one_direction_and_the_best_method_follows_it():
    from octlens.audit.pipeline import best_method
    from octlens.audit.result import MethodSummary, SanitySummary
    from octlens.audit.scores import HIGHER_IS_BETTER, Score, direction_mark

    assert set(HIGHER_IS_BETTER) == set(Score) | set(Region)
    assert all(column.score in HIGHER_IS_BETTER for column in COLUMNS)
    assert (
        direction_mark(Score.DELETION_AUC) == "\u2193"
        and direction_mark(Region.CORNERS) == "\u2193"
    )

    def method(deletion: float, insertion: float, passed: bool = True) -> MethodSummary:
        sanity = SanitySummary(passed=passed, stages=[], spearman_median=[], ssim_median=[])
        scores = {"all": {Score.DELETION_AUC: deletion, Score.INSERTION_AUC: insertion}}
        return MethodSummary(scores=scores, sanity=sanity, worst_off_retina=[])

    # gains (insertion - deletion): a 0.5, b 0.6 (a low deletion is good: b wins despite a's
    # higher insertion), c 0.9 but failing sanity
    methods = {"a": method(0.4, 0.9), "b": method(0.1, 0.7), "c": method(0.0, 0.9, False)}
    assert best_method(methods) == "b"
    assert best_method({"c": methods["c"]}) is None


def test_the_lesion_verdict_credits_only_intervals_above_the_stronger_prior():
    from octlens.audit.result import LocalizationSummary, MethodSummary, SanitySummary

    def gap(mean: float) -> Interval:
        return Interval(mean=mean, low=mean - 0.05, high=mean + 0.05)

    def method(passed: bool) -> MethodSummary:
        sanity = SanitySummary(passed=passed, stages=[], spearman_median=[], ssim_median=[])
        return MethodSummary(scores={}, sanity=sanity, worst_off_retina=[])

    scores = ("within_retina_auroc", "energy_in_lesion", "pointing_game")
    summary = LocalizationSummary(
        n_annotated=30, n_with_lesion=24, n_lesion_predicted=20, references={},
        stronger_prior={score: THICKEST for score in (*scores, "pixel_auroc")},
        beyond_prior={
            "gradcam": {score: gap(-0.1) for score in scores},
            "lrp": {"within_retina_auroc": gap(0.2), "energy_in_lesion": gap(0.04),
                    "pointing_game": gap(0.3)},
            "layercam": {score: gap(0.3) for score in scores},
        },
    )  # fmt: skip
    methods = {"gradcam": method(True), "lrp": method(True), "layercam": method(False)}
    assert summary.credited("lrp") == ["within_retina_auroc", "pointing_game"]  # 0.04 ± 0.05: no
    line = summary.verdict(methods, "gradcam")
    assert line.startswith("lesions (20 scans with a lesion, predicted as its class): gradcam is")
    assert "is not shown to find lesions beyond what the retina alone tells; lrp does (" in line
    assert "layercam" not in line  # credited, but it fails the sanity check
    assert f"(against the {THICKEST}: within-retina AUROC -0.100 [-0.150, -0.050]" in line
    best = summary.verdict(methods, "lrp")
    assert "lrp finds lesions beyond the retina on within-retina AUROC, pointing game (" in best
    # no best method (none passes, say): the first is described, and its failure said
    failing = {"layercam": method(False), "gradcam": method(False)}
    unsure = summary.verdict(failing, None)
    assert "layercam, which fails the sanity check, finds lesions beyond the retina" in unsure
    assert unsure.split(" (against")[0].endswith("; no sanity-passing method does")
    empty = LocalizationSummary(
        n_annotated=3, n_with_lesion=2, n_lesion_predicted=0, references={},
        stronger_prior={}, beyond_prior={},
    )  # fmt: skip
    unjudged = empty.verdict(methods, None)
    assert "none of the 2 annotated scans with a lesion is predicted" in unjudged
    # a handful of scans credits nothing, however far above the prior: no interval has width
    few = summary.model_copy(update={"n_lesion_predicted": 4})
    assert few.credited("lrp") == [] and few.credited("layercam") == []
    assert "too few to credit a method (10 needed); gradcam: against" in few.verdict(methods, None)
    # a score no scan defines (lesions off the retina found) leaves the others judged
    partial = summary.model_copy(
        update={"beyond_prior": {"lrp": {"pointing_game": gap(0.3)}, "gradcam": {}}}
    )
    assert partial.credited("lrp") == ["pointing_game"]
    assert "lrp finds lesions beyond the retina on pointing game (against" in partial.verdict(
        methods, "gradcam"
    )


def test_a_thin_lesion_survives_resizing_and_a_mask_of_another_shape_is_refused(
    tmp_path, tiny_data
):
    """At 32 px a one-pixel lesion line falls between nearest-neighbour samples: the scan must
    stay annotated with a lesion, not become "no lesion". A transposed mask is another shape,
    not a scale of the scan: one warning naming it, the scan not annotated."""
    from octlens.audit.batch import load_audit_batch
    from octlens.data.index import scan as index_scan
    from octlens.data.transforms import Normalization

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    index = index_scan(data, verbose=False)
    thin, transposed = index.splits["test"][:2]
    line = np.zeros(Image.open(thin.path).size[::-1], np.uint8)
    line[61, 10:100] = 255  # row 61: between the rows a 32 px nearest resize samples
    Image.fromarray(line).save(index.mask_path(thin))
    shape = np.asarray(Image.open(index.mask_path(transposed)))
    Image.fromarray(np.ascontiguousarray(shape.T)).save(index.mask_path(transposed))
    with pytest.warns(DataWarning, match="another shape, not a scale of it"):
        batch = load_audit_batch(
            index, [thin, transposed], 32, Normalization(mean=0.5, std=0.25), verbose=False
        )
    assert batch.annotated.tolist() == [True, False]
    assert batch.lesions[0].any() and not batch.lesions[1].any()


def test_a_stratified_sample_keeps_each_group_in_proportion():
    groups = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    for size, expected in ((10, [5, 3, 1, 1]), (40, [20, 12, 6, 2]), (4, [1, 1, 1, 1])):
        picks = stratified_sample(groups, size)
        assert torch.bincount(groups[picks], minlength=4).tolist() == expected
        assert picks.unique().tolist() == picks.tolist()  # sorted, no scan twice
        assert torch.equal(picks, stratified_sample(groups, size))  # seeded
    assert torch.equal(stratified_sample(groups, None), torch.arange(100))
    assert torch.equal(stratified_sample(groups, 100), torch.arange(100))
    assert not torch.equal(stratified_sample(groups, 40, seed=1), stratified_sample(groups, 40))


def test_faithfulness_on_a_sample_agrees_with_every_scan_and_changes_nothing_else(
    marked_run, tmp_path
):
    """The sampled audit against the full one: each faithfulness number's interval holds the
    full audit's value, every other number is the same, and audit.json lists the sample."""
    settings = {"methods": ["gradcam", "hirescam", "layercam"], "steps": 4, "sanity_scans": 2}
    run, data = marked_run / "run", marked_run / "data"
    full = audit_run(run, data, faithfulness_scans=None, out=tmp_path / "full", **settings)
    half = full.n_scans // 2
    sampled = audit_run(run, data, faithfulness_scans=half, out=tmp_path / "half", **settings)
    assert full.faithfulness_protocol.scans is None
    scans = sampled.faithfulness_protocol.scans
    assert scans is not None and len(set(scans)) == half
    assert AuditResult.load(tmp_path / "half" / "audit.json").faithfulness_protocol.scans == scans
    edited = json.loads((tmp_path / "half" / "audit.json").read_text())
    edited["faithfulness_protocol"]["scans"] = scans * 3  # more than were audited
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(OctlensError, match="faithfulness scans of"):
        AuditResult.load(tmp_path / "edited.json")
    assert f"on {half} of the {full.n_scans}" in sampled.faithfulness_protocol.sample_note(
        sampled.n_scans
    )
    cheap = [s for s in full.methods["gradcam"].scores["all"] if s not in PERTURBATION]
    for name, method in sampled.methods.items():
        everyone = full.methods[name]
        assert set(method.faithfulness) == set(PERTURBATION)
        for score, stated in method.faithfulness.items():
            assert stated.mean == pytest.approx(method.scores["all"][score])
            assert stated.low <= everyone.faithfulness[score].mean <= stated.high, (name, score)
        assert {s: method.scores["all"][s] for s in cheap} == {
            s: everyone.scores["all"][s] for s in cheap
        }
        assert method.sanity == everyone.sanity
    assert sampled.counterfactual == full.counterfactual
    assert (sampled.flagged, sampled.flag_reasons) == (full.flagged, full.flag_reasons)
    assert sampled.best_method == full.best_method


def test_a_rate_interval_is_wilsons_and_not_empty_when_nothing_happened():
    """Wilson's score interval, as tabulated: 1 of 10 is [0.0179, 0.4042]; 0 of 7 still
    leaves up to 0.354 possible, where a bootstrap would say [0, 0]."""
    one_in_ten = rate_interval(torch.tensor([1.0] + [0.0] * 9))
    assert (one_in_ten.mean, one_in_ten.low, one_in_ten.high) == pytest.approx(
        (0.1, 0.0179, 0.4042), abs=1e-4
    )
    none = rate_interval(torch.zeros(7))
    assert (none.low, none.high) == pytest.approx((0.0, 0.3543), abs=1e-4)
