"""Robustness curves from one run (#28): per-sample radii, curves, median columns, the
consistency checks, and the files and leaderboard section they give. Hand-built outcomes whose
numbers are known: five samples of one defense, sample 0 misclassified."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from advbench.reporting.curves import (
    add_radius_columns,
    certificate_frame,
    certified_at,
    certified_radii,
    consistency_flags,
    curve,
    record_curves,
    robust_at,
    sample_radii,
    summary,
    with_curves,
)
from advbench.reporting.leaderboard import to_markdown
from advbench.reporting.reading import read_results
from advbench.reporting.results import blank_row, wilson_interval, write_results
from advbench.reporting.sanity import certificate_contradicted, minimum_norm_weak

INF, NAN = math.inf, math.nan
CLEAN = [False, True, True, True, True]


def cell(attack: str, eps: float, robust: list[bool], needed: list[float] | None = None,
         norm: str = "linf", **extra):
    """A valid row of defense ``none`` and its per-sample outcome."""
    row = blank_row()
    n = len(robust)
    row.update(dataset="mnist", model="cnn", defense="none", attack=attack, norm=norm, eps=eps,
               split="test", n_samples=n, clean_accuracy=sum(CLEAN) / n,
               robust_accuracy=sum(robust) / n, attack_success_rate=0.0, valid=True,
               status="ok", invalid_reason="", flags="", schema_version=1, seed=0,
               cell_key=f"{attack}-{norm}-{eps}", **extra)
    samples = pd.DataFrame({"cell_key": row["cell_key"], "sample": range(n),
                            "clean_correct": CLEAN, "adv_pred": 0, "label": 1, "queries": 1,
                            "robust": robust, "needed_norm": needed or [NAN] * n})
    return row, samples


def run(*cells) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.DataFrame([row for row, _ in cells]),
            pd.concat([samples for _, samples in cells], ignore_index=True))


# FMN and FAB at ε = 0.1 report their smallest norms (FAB none for sample 4) and break what
# lies within 0.1; FGSM at ε = 0.1 breaks sample 4 and sample 2, which both minimum-norm
# attacks put at 0.5 or more: they were weak there.
FMN = cell("fmn-linf", 0.1, [False, True, True, True, False], [NAN, 0.3, 0.5, INF, 0.05],
           certifier="crown-ibp")
FAB = cell("fab-linf", 0.1, [False, True, True, True, False], [NAN, 0.2, 0.6, INF, NAN],
           certifier="crown-ibp")
FGSM = cell("fgsm", 0.1, [False, True, False, True, False], certifier="crown-ibp")
WORST = cell("worst-case", 0.1, [False, True, False, True, False], certifier="crown-ibp")
RADII = [0.0, 0.2, 0.1, INF, 0.05]  # min over FMN and FAB, capped at 0.1 by FGSM on sample 2


def test_radius_is_the_smallest_minimum_norm_capped_by_fixed_eps_cells():
    frame, samples = run(FMN, FAB, FGSM, WORST)
    radii = sample_radii(frame, samples)
    assert radii["attack_radius"].tolist() == RADII
    assert radii["minimum_norm"].iloc[1:].tolist() == [0.2, 0.5, INF, 0.05]
    assert radii["certified_radius"].isna().all()  # no certificate given


def test_no_curve_without_a_minimum_norm_attack():
    frame, samples = run(FGSM, cell("pgd-linf", 0.1, [False] * 5))
    assert sample_radii(frame, samples).empty


def test_curve_values_and_wilson_band():
    radii = np.array(RADII)
    assert robust_at(radii, np.array([0.0, 0.05, 0.1, 0.15, 0.2, 10.0])).tolist() == [
        0.8, 0.6, 0.4, 0.4, 0.2, 0.2]  # robust at ε: radius above ε (a radius ε breaks at ε)
    part = pd.DataFrame({"attack_radius": radii, "certified_radius": NAN})
    values = curve(part, np.array([0.1]))
    assert values["robust_accuracy"].iloc[0] == 0.4
    assert (values["robust_accuracy_ci_low"].iloc[0],
            values["robust_accuracy_ci_high"].iloc[0]) == wilson_interval(2, 5)
    assert values["certified_accuracy"].isna().all()


def test_certified_radii_from_per_eps_certificates():
    certified = {("test", 0.1): np.array([False, True, True, False]),
                 ("test", 0.2): np.array([False, False, True, False])}
    assert certified_radii(certified)["test"].tolist() == [0.0, 0.1, 0.2, 0.0]
    exact = certified_radii(certified, {"test": [0.0, 0.13, NAN, 0.4]})["test"]
    assert exact.tolist() == [0.0, 0.13, 0.0, 0.4]  # smoothing's own radii win; NaN: none
    # certified at ε: certified at a positive radius >= ε (0 certifies nothing)
    assert certified_at(np.array([0.0, 0.1, 0.2, 0.0]), np.array([0.0, 0.1, 0.15])).tolist() \
        == [0.5, 0.5, 0.25]


def certificates(radii: list[float]) -> pd.DataFrame:
    return certificate_frame({"none": {}}, {"none": {"test": radii}})


def test_a_sample_graded_misclassified_has_certified_radius_zero():
    frame, samples = run(FMN, FAB, FGSM, WORST)
    radii = sample_radii(frame, samples, certificates([0.4, 0.1, 0.1, 0.1, 0.0]))
    assert radii["certified_radius"].tolist() == [0.0, 0.1, 0.1, 0.1, 0.0]


def test_median_columns_land_in_the_worst_case_rows():
    frame, samples = run(FMN, FAB, FGSM, WORST)
    radii = sample_radii(frame, samples, certificates([0.0, 0.1, 0.1, 0.1, 0.0]))
    medians = summary(radii)
    assert medians["median_radius"].tolist() == [0.1]  # of 0, 0.2, 0.1, inf, 0.05
    assert medians["median_certified_radius"].tolist() == [0.1]
    # correctly classified samples: 0.2−0.1, 0.1−0.1, inf−0.1, 0.05−0 → median 0.075
    assert medians["median_radius_gap"].iloc[0] == pytest.approx(0.075)
    with_columns = add_radius_columns(frame, medians)
    worst = with_columns["attack"] == "worst-case"
    assert with_columns.loc[worst, "median_radius"].tolist() == [0.1]
    assert with_columns.loc[~worst, "median_radius"].isna().all()


def test_a_threat_model_with_one_attack_gets_the_columns_on_that_row():
    row, samples = cell("fmn-l2", 1.5, [False, True, False, True, True],
                        [NAN, 2.0, 0.5, INF, 1.7], norm="l2")
    frame, samples = run((row, samples))
    with_columns = add_radius_columns(frame, summary(sample_radii(frame, samples)))
    assert with_columns["median_radius"].tolist() == [1.7]  # of 0, 2.0, 0.5, inf, 1.7


def test_fixed_eps_attack_beating_the_minimum_norm_ones_is_flagged_with_the_count():
    frame, samples = run(FMN, FAB, FGSM, WORST)
    flags = consistency_flags(frame, samples, sample_radii(frame, samples))
    assert flags == {2: ["minimum-norm attack weak on 1 sample (this cell broke them at "
                         "ε=0.1, below the smallest norm the minimum-norm attacks found for "
                         "them)"]}
    assert minimum_norm_weak(np.array([True, True, True, False]),
                             np.array([0.3, 0.1, NAN, 0.5]), 0.1).startswith(
        "minimum-norm attack weak on 1 sample ")  # 0.1 itself and NaN are no finding


def test_a_minimum_norm_cell_breaking_a_sample_by_its_projection_does_not_flag_itself():
    """FMN reports 0.3 for sample 2 yet its ε-projected example broke it at 0.1 (its own
    cell): that caps the radius, it shows no weakness of the minimum-norm attacks."""
    projected = cell("fmn-linf", 0.1, [False, True, False, True, False],
                     [NAN, 0.3, 0.3, INF, 0.05])
    frame, samples = run(projected)
    assert consistency_flags(frame, samples, sample_radii(frame, samples)) == {}


def test_planted_certificate_above_a_found_example_is_flagged_loudly():
    frame, samples = run(FMN, FAB, FGSM, WORST)
    # sample 1 planted as certified at 0.25: FAB found an example at 0.2 (FMN only at 0.3)
    radii = sample_radii(frame, samples, certificates([0.0, 0.25, 0.1, 0.5, 0.0]))
    flags = consistency_flags(frame, samples, radii)
    loud = {index: [f for f in found if f.startswith("CERTIFICATE CONTRADICTED")]
            for index, found in flags.items()}
    assert {index: len(found) for index, found in loud.items() if found} == {1: 1}
    assert loud[1][0].startswith("CERTIFICATE CONTRADICTED on 1 sample: certified at a radius "
                                 "above the norm of an adversarial example")
    # the count, and a certificate at exactly the found norm is no contradiction
    assert certificate_contradicted(np.array([0.1, 0.2, 0.5, 0.3]),
                                    np.array([0.1, 0.1, INF, 0.05])).startswith(
        "CERTIFICATE CONTRADICTED on 2 samples:")
    assert certificate_contradicted(np.array([0.1, 0.0]), np.array([0.1, 0.0])) is None


def test_a_consistent_run_raises_no_flag():
    fgsm = cell("fgsm", 0.1, [False, True, True, True, False], certifier="crown-ibp")
    worst = cell("worst-case", 0.1, [False, True, True, True, False], certifier="crown-ibp")
    frame, samples = run(FMN, FAB, fgsm, worst)
    radii = sample_radii(frame, samples, certificates([0.0, 0.1, 0.2, 0.5, 0.0]))
    assert consistency_flags(frame, samples, radii) == {}
    eps = np.linspace(0, 1, 101)
    values = curve(radii, eps)
    assert (values["certified_accuracy"] <= values["robust_accuracy"]).all()


def test_record_curves_writes_radii_figures_and_the_leaderboard_section(tmp_path):
    frame, samples = run(FMN, FAB, FGSM, WORST)
    write_results(tmp_path, frame.to_dict("records"))
    samples.to_parquet(tmp_path / "samples.parquet", index=False)
    certified = {"none": {("test", 0.1): np.array([False, True, True, True, False])}}
    updated, figures = record_curves(read_results(tmp_path / "results.csv"), tmp_path, certified)
    assert [p.name for p in figures] == ["curves_test_linf.png"] and figures[0].is_file()
    page = json.loads((tmp_path / "radii.json").read_text(encoding="utf-8"))
    group = page["groups"][0]
    assert (group["defense"], group["norm"], group["n"]) == ("none", "linf", 5)
    assert group["attack_radius"] == [0.0, 0.2, 0.1, None, 0.05]  # null: never broken
    assert group["certified_radius"] == [0.0, 0.1, 0.1, 0.1, 0.0]
    assert pd.read_parquet(tmp_path / "radii.parquet")["attack_radius"].tolist() == RADII
    again = read_results(tmp_path / "results.parquet")  # rewritten, and still valid
    worst = again[again["attack"] == "worst-case"].iloc[0]
    assert (worst["median_radius"], worst["median_certified_radius"]) == (0.1, 0.1)
    assert "minimum-norm attack weak on 1 sample" in again.loc[2, "flags"]
    csv = read_results(tmp_path / "results.csv")
    assert csv["median_radius"].tolist()[3] == 0.1 and csv["flags"].tolist() == \
        again["flags"].tolist()
    text = to_markdown(updated, {"figures": [f"figures/{figures[0].name}"]})
    assert "## Robustness curves" in text and "![curves_test_linf]" in text
    assert "| none      | 0.1             | 0.1                | 0.075" in text
    assert text.count("curves_test_linf.png") == 1  # not again among the other figures


def test_negative_radius_in_a_results_file_is_refused(tmp_path):
    frame, _ = run(FMN)
    frame["median_radius"] = -0.5
    write_results(tmp_path, frame.to_dict("records"))
    with pytest.raises(Exception, match="median_radius = -0.5: a radius must be >= 0"):
        read_results(tmp_path / "results.csv")


def test_a_cascade_cell_is_flagged_only_for_what_it_broke_itself():
    # in the cascade fmn-linf > fab-linf > fgsm, FGSM skipped sample 4 (predicted −1: broken
    # before it) and broke sample 2 itself, which the minimum-norm attacks put at 0.5
    fgsm, samples = cell("fgsm", 0.1, [False, True, False, True, False],
                         cascade="fmn-linf > fab-linf > fgsm")
    samples["adv_pred"] = [0, 1, 0, 1, -1]
    frame, all_samples = run(FMN, FAB, (fgsm, samples))
    flags = consistency_flags(frame, all_samples, sample_radii(frame, all_samples))
    assert flags[2][0].startswith("minimum-norm attack weak on 1 sample ")
    samples["adv_pred"] = [0, 1, -1, 1, -1]  # had it skipped sample 2 too: nothing of its own
    frame, all_samples = run(FMN, FAB, (fgsm, samples))
    assert consistency_flags(frame, all_samples, sample_radii(frame, all_samples)) == {}


def test_in_memory_curves_and_a_run_without_minimum_norm_attacks(tmp_path):
    frame, samples = run(FMN, FAB, FGSM, WORST)
    updated, radii = with_curves(frame, samples)  # the Python API's frame, no run folder
    assert radii["attack_radius"].tolist() == RADII
    assert updated.loc[updated["attack"] == "worst-case", "median_radius"].tolist() == [0.1]
    frame, samples = run(FGSM, WORST)
    write_results(tmp_path, frame.to_dict("records"))
    samples.to_parquet(tmp_path / "samples.parquet", index=False)
    before = read_results(tmp_path / "results.csv")
    after, figures = record_curves(before, tmp_path)
    assert figures == [] and after is before and not (tmp_path / "radii.json").exists()
