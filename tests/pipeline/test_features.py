import numpy as np
import pytest

from contrastlab.infra.errors import FileError
from contrastlab.pipeline.features import shifted_name, stored_features


def test_each_representation_comes_with_its_own_shifted_copies_only():
    a, b, c, d, e = (np.full((2, 3), value) for value in range(5))
    saved = {"labels": np.arange(2), "embedding": a, "backbone": b, shifted_name("embedding", 3): c,
             shifted_name("embedding", -6): d, shifted_name("backbone", 3): e}
    assert shifted_name("backbone", 3) == "backbone_shift+3" and shifted_name("embedding", -6) == "embedding_shift-6"
    features, shifted = stored_features(saved, "embedding")
    assert features is a and shifted.keys() == {"3", "-6"} and shifted["3"] is c and shifted["-6"] is d
    features, shifted = stored_features(saved, "backbone")
    assert features is b and list(shifted) == ["3"] and shifted["3"] is e


def test_a_file_from_before_the_backbone_was_kept_is_named_with_the_advice():
    with pytest.raises(FileError, match=r"holds no 'backbone' features \(only embedding, labels\): it predates them; "
                                        r"delete it and run `dvc repro`"):
        stored_features({"embedding": np.zeros((2, 3)), "labels": np.arange(2)}, "backbone")
