import pytest
import yaml

from daug import DaugError
from daug.params import deep_merge, resolve
from tests.conftest import REPO


def test_committed_params_yaml_is_the_resolved_cpu_profile():
    """params.yaml is generated (`python -m daug profile cpu`); a hand edit or a stale copy fails here."""
    committed = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert committed == resolve("cpu", REPO / "params")


def test_profiles_override_base_keys_and_merge_nested_ones():
    assert deep_merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]}) == {"a": {"x": 1, "y": 3}, "l": [2]}
    smoke = resolve("smoke", REPO / "params")
    assert smoke["profile"] == "smoke" and smoke["model"]["source"] == "tiny"
    assert smoke["datasets"] == resolve("cpu", REPO / "params")["datasets"]


def test_unknown_profile_lists_the_choices():
    with pytest.raises(DaugError, match="choose one of: cpu, paper, smoke"):
        resolve("gpu", REPO / "params")
