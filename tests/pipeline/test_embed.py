import numpy as np
import pytest

from contrastlab.infra.errors import TrainingDiverged
from contrastlab.pipeline.embed import shift_horizontally, stop_if_outputs_not_finite


def test_shift_moves_columns_and_fills_the_gap_with_zero():
    images = np.arange(1, 7, dtype=np.uint8).reshape(1, 1, 1, 6)  # one row: 1 2 3 4 5 6
    assert shift_horizontally(images, 2).ravel().tolist() == [0, 0, 1, 2, 3, 4]
    assert shift_horizontally(images, -3).ravel().tolist() == [4, 5, 6, 0, 0, 0]
    assert shift_horizontally(images, 0).ravel().tolist() == [1, 2, 3, 4, 5, 6]
    assert shift_horizontally(images, -9).ravel().tolist() == [0] * 6  # wider than the image: nothing left


def test_outputs_that_are_not_finite_stop_the_stage_naming_the_first_and_how_many():
    healthy = np.ones((4, 3), dtype=np.float32)
    broken = np.array([[1, np.inf, 2], [np.nan, 0, -np.inf]], dtype=np.float32)  # 3 of 6 values
    stop_if_outputs_not_finite({"embedding": healthy, "backbone": healthy}, "test images")
    with pytest.raises(TrainingDiverged) as caught:
        stop_if_outputs_not_finite(
            {"embedding": healthy, "backbone": broken, "backbone_shift+3": broken}, "test images"
        )
    assert str(caught.value) == (
        "training diverged: the encoder's backbone outputs for the test images are not finite "
        "(3 of 6 values are NaN or infinite); lower train.lr or change the recipe"
    )
