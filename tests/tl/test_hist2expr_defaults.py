"""The hist2expr benchmark's default row runs the package defaults (issue 17: one configuration, not two)."""

import importlib.util
import inspect
import sys
from pathlib import Path

import sslspatial as ss

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "hist2expr_her2st.py"


def _benchmark_config() -> dict:
    if str(BENCHMARK.parent) not in sys.path:  # the script imports its sibling helpers (_stamp) as a script would
        sys.path.insert(0, str(BENCHMARK.parent))
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


def test_the_command_line_defaults_are_the_function_defaults():
    from sslspatial.cli import build_parser

    args = build_parser().parse_args(["hist2expr", "store.zarr"])
    defaults = {k: p.default for k, p in inspect.signature(ss.tl.hist2expr).parameters.items()}
    assert args.patch_scale == defaults["patch_scale"] and args.spot_size is defaults["spot_size"] is None
    assert args.validation_sections == defaults["n_validation_sections"]
    assert (args.patch_px, args.max_epochs, args.likelihood) == (
        defaults["patch_px"],
        defaults["max_epochs"],
        defaults["likelihood"],
    )
