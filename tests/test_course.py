"""eclipse_lite.course: what the notebooks use beyond the library."""
import json

import numpy as np
import pytest

from eclipse_lite.course import write_metrics


def test_write_metrics_writes_a_flat_dict_of_finite_numbers(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    written = write_metrics({"r1": np.float32(12.5), "n": np.int64(4), "ok": np.bool_(True),
                             "flag": False, "name": "eclipse"}, path)
    assert written == {"r1": 12.5, "n": 4, "ok": 1, "flag": 0, "name": "eclipse"}
    assert json.loads(path.read_text()) == written
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]      # no temporary left


@pytest.mark.parametrize("bad, error, message", [
    ({"r1": float("nan")}, ValueError, "'r1' is not finite"),
    ({"r5": np.float64("inf")}, ValueError, "'r5' is not finite"),
    ({"ranks": [1, 2]}, TypeError, "'ranks' has type list"),
])
def test_write_metrics_names_the_bad_metric_and_writes_nothing(tmp_path, bad, error, message):
    path = tmp_path / "metrics.json"
    with pytest.raises(error, match=message):
        write_metrics(bad, path)
    assert not path.exists()
