from __future__ import annotations

import numpy as np

from pipeline.stages.integrate import autocrop_box


def test_autocrop_peels_the_under_covered_border():
    count = np.full((60, 80), 10, dtype=np.uint16)
    count[:7] = 3  # dither: the top rows are covered by few subs
    count[:, 70:] = 4
    count[50:, :5] = 2  # a corner missing after a small rotation
    rows, cols = autocrop_box(count, minimum=8)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (7, 60, 5, 70)
    assert (count[rows, cols] >= 8).all()


def test_autocrop_of_a_colour_count_uses_the_worst_channel():
    count = np.full((3, 20, 30), 10, dtype=np.uint16)
    count[2, :, :4] = 1
    rows, cols = autocrop_box(count, minimum=5)
    assert cols.start == 4 and rows == slice(0, 20)
