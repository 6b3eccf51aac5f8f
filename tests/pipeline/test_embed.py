import numpy as np

from contrastlab.pipeline.embed import shift_horizontally


def test_shift_moves_columns_and_fills_the_gap_with_zero():
    images = np.arange(1, 7, dtype=np.uint8).reshape(1, 1, 1, 6)  # one row: 1 2 3 4 5 6
    assert shift_horizontally(images, 2).ravel().tolist() == [0, 0, 1, 2, 3, 4]
    assert shift_horizontally(images, -3).ravel().tolist() == [4, 5, 6, 0, 0, 0]
    assert shift_horizontally(images, 0).ravel().tolist() == [1, 2, 3, 4, 5, 6]
    assert shift_horizontally(images, -9).ravel().tolist() == [0] * 6  # wider than the image: nothing left
