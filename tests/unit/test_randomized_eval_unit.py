"""Grading randomized defenses (issue #26, point 1): a prediction is a random variable, so the
harness grades the mean softmax over a stated number of draws, for clean and adversarial inputs
alike, and an input an attack returned unchanged keeps its clean prediction: the defense's own
noise is never counted as an attack's success, and ε = 0 equals clean accuracy, worst case
included."""

from __future__ import annotations


def test_the_eps_zero_flag_still_catches_a_cell_below_clean():
    """The battery's check itself is unchanged: a cell at ε = 0 below clean is flagged."""
    import pandas as pd

    from advbench.reporting.sanity import eps_zero_differs

    cells = pd.DataFrame({"eps": [0.0, 0.0, 0.1], "clean_accuracy": [0.6, 0.6, 0.6],
                          "robust_accuracy": [0.6, 0.5, 0.2]})
    assert [index for index, _ in eps_zero_differs(cells)] == [1]
