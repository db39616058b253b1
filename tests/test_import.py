"""Import cost and lazy loading of the package; warnings attributed to the caller's line."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

HEAVY = ("torch", "scvi", "squidpy", "torch_geometric", "lightning", "spatialdata", "anndata", "scanpy")


def _modules_loaded_by(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_loads_no_heavy_dependency():
    loaded = _modules_loaded_by("import sslspatial")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "sslspatial.tl" not in loaded and "sslspatial.pp" not in loaded


def test_cli_help_and_version_import_argparse_only():
    code = (
        "from sslspatial.cli import main\n"
        "for argv in (['--help'], ['--version'], ['pretrain', '--help'], ['dataset', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass"
    )
    loaded = _modules_loaded_by(code)
    assert not loaded & {*HEAVY, "numpy", "pandas"}, sorted(loaded & {*HEAVY, "numpy", "pandas"})


def test_subpackages_and_their_names_load_on_first_access():
    import sslspatial as ss

    for name in ("pp", "tl", "pl", "datasets", "model", "metrics", "data", "objectives", "nn", "module"):
        assert name in ss.__all__ and name in dir(ss)
    assert "__version__" in ss.__all__ and isinstance(ss.__version__, str)
    from sslspatial.pp._graph import build_graph

    assert ss.pp.build_graph is build_graph
    assert "build_graph" in dir(ss.pp) and "build_graph" in ss.pp.__all__
    from sslspatial.tl import pretrain_mask

    assert pretrain_mask is ss.tl.pretrain_mask
    assert ss.objectives.OBJECTIVES[0] == "mask"
    assert callable(ss._io.get_table)  # private modules stay reachable as attributes
    with pytest.raises(AttributeError, match="no attribute 'no_such_function'"):
        ss.tl.no_such_function  # noqa: B018
    with pytest.raises(AttributeError):
        ss.no_such_module  # noqa: B018
    assert not hasattr(ss.pp, "__no_such_dunder__")


def test_star_import_gives_every_public_name():
    namespace: dict = {}
    exec("from sslspatial.tl import *", namespace)
    assert {"pretrain_mask", "annotate", "domains", "transfer", "hist2expr", "superres"} <= set(namespace)


def test_package_warning_points_at_the_callers_line():
    import anndata as ad
    import numpy as np

    import sslspatial as ss

    adata = ad.AnnData(np.ones((5, 2), dtype=np.float32))
    adata.obsm["spatial"] = np.arange(10.0).reshape(5, 2) * 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        ss.pp.build_graph(adata, method="radius", radius=1.0)
    ours = [w for w in caught if "no neighbour within radius" in str(w.message)]
    assert len(ours) == 1
    assert ours[0].filename == __file__ and ours[0].lineno == line
    assert ours[0].category is UserWarning


def test_warn_helper_and_error_filter():
    import anndata as ad
    import numpy as np

    import sslspatial as ss
    from sslspatial import _warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        _warnings.warn("from the package", RuntimeWarning)
    assert [(w.filename, w.lineno, w.category) for w in caught] == [(__file__, line, RuntimeWarning)]

    adata = ad.AnnData(np.ones((5, 2), dtype=np.float32))
    adata.obsm["spatial"] = np.arange(10.0).reshape(5, 2) * 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user turning warnings into errors still gets the exception
        with pytest.raises(UserWarning, match="no neighbour within radius"):
            ss.pp.build_graph(adata, method="radius", radius=1.0)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the sslspatial modules it imports anywhere (function-level imports too), from the source by ast."""
    import ast
    from pathlib import Path

    import sslspatial

    root = Path(sslspatial.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (path, parts[-1] == "__init__")
    graph = {}
    for name, (path, is_package) in names.items():
        package = name.split(".") if is_package else name.split(".")[:-1]
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".")
                base = base if node.level else node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            # a package's own __init__ re-exports its submodules: not a cycle worth reporting
            graph[name] |= {t for t in targets if t in names and t != name and not name.startswith(t + ".")}
    return graph


def test_no_import_cycles_among_the_package_modules():
    """Lower layers never import upper ones, even inside a function (issue 30: _validate <-> data._tiles was one)."""
    graph = _import_graph()
    assert "sslspatial.tl._pretrain" in graph and "sslspatial.model" in graph["sslspatial.tl._pretrain"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles
