"""The hist2expr benchmark's default row runs the package defaults (issue 17: one configuration, not two)."""

import importlib.util
import inspect
from pathlib import Path

import sslspatial as ss

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "hist2expr_her2st.py"


def _benchmark_config() -> dict:
    spec = importlib.util.spec_from_file_location("hist2expr_her2st_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def test_benchmark_default_row_is_the_package_default():
    config = _benchmark_config()
    defaults = {k: p.default for k, p in inspect.signature(ss.tl.hist2expr).parameters.items()}
    assert config["spot_scale"] == defaults["patch_scale"] == 1.5
    assert "n_validation_sections" not in config and defaults["n_validation_sections"] == 0
    for name in ("patch_px", "max_epochs", "lr", "window_size"):
        assert config[name] == defaults[name], name
    assert not config["model_kwargs"]
