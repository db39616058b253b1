"""Sphinx configuration for sslspatial.

Build with ``sphinx-build -W -n --keep-going -b html docs docs/_build/html`` (warnings are errors, every internal
reference must resolve). At every build this file (1) regenerates ``benchmarks.md`` and ``results/`` from
``../benchmarks/results``, (2) copies ``../tutorials/*.ipynb`` into ``tutorials/`` so that myst-nb renders them with
their stored outputs (they are never executed here), and sphinx-gallery (3) runs ``examples/plot_*.py`` into
``gallery/``. The landing page's figure ``_static/landing.png`` is drawn by ``make_landing_figure.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import build_benchmarks_page  # noqa: E402


def _copy_tutorials(src: Path = ROOT / "tutorials", dst: Path = HERE / "tutorials") -> list[str]:
    """Mirror the notebooks into the docs source tree (only files that changed, so incremental builds stay fast)."""
    dst.mkdir(exist_ok=True)
    names = sorted(p.name for p in src.glob("*.ipynb"))
    for name in names:
        a, b = src / name, dst / name
        if not b.exists() or a.read_bytes() != b.read_bytes():
            shutil.copyfile(a, b)
    for stale in dst.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    return names


# sphinx-autodoc-typehints still calls an API that Sphinx 10 removes: not our warning, keep the console clean.
warnings.filterwarnings("ignore", message=".*set_application.*is deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="sphinx_autodoc_typehints")

build_benchmarks_page.build()
TUTORIALS = _copy_tutorials()

# -- project -----------------------------------------------------------------------------------------------------
project = "sslspatial"
author = "sslspatial developers"
copyright = "2026, sslspatial developers"
release = _version("sslspatial")
version = release

# -- extensions --------------------------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "build_benchmarks_page.py",
    "make_landing_figure.py",
    "examples",
    "gallery/*.ipynb",
    "sg_execution_times.rst",
    "gallery/sg_execution_times.rst",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
autodoc_typehints = "description"
autodoc_mock_imports = ["torchvision"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_use_ivar = True  # NamedTuple fields are documented once (as fields), not twice
autodoc_inherit_docstrings = False  # overridden Lightning / scvi-tools methods would bring foreign reST roles
typehints_defaults = "comma"
typehints_use_signature = False
always_document_param_types = False

# -- gallery: docs/examples/plot_*.py, executed at every build (a few seconds each), rendered into docs/gallery/ --------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "gallery",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1000,  # no per-example timing lines (they are on CPU shared with the build)
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib", "gallery_reset.one_torch_thread"),
    "capture_repr": (),
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "first_notebook_cell": None,
    "remove_config_comments": True,
}

myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "substitution"]
myst_substitutions = build_benchmarks_page.verdicts()  # {{ verdict_<benchmark> }}: the guides' "what to expect"
myst_heading_anchors = 3
nb_execution_mode = "off"  # tutorials are executed by tests/test_tutorials.py; the docs render their stored outputs
nb_merge_streams = True
nb_output_stderr = "remove"

# -- cross references --------------------------------------------------------------------------------------------
# Inventories are fetched only when SSLSPATIAL_DOCS_INTERSPHINX=1 (CI without network and the test build skip them;
# unresolved external references then render as plain text, which is not a warning).
intersphinx_mapping = (
    {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
        "squidpy": ("https://squidpy.readthedocs.io/en/stable/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "matplotlib": ("https://matplotlib.org/stable/", None),
    }
    if os.environ.get("SSLSPATIAL_DOCS_INTERSPHINX") == "1"
    else {}
)
intersphinx_timeout = 10

# `sphinx-build -n` (nitpicky, as the tests run it): every reference to an sslspatial object must resolve. References
# to other packages resolve only with the inventories above (network); without them they are listed here, by package,
# and render as plain text. Nothing of sslspatial is listed: an unresolved internal reference fails the build.
_EXTERNAL = (
    "anndata", "collections", "dask", "geopandas", "gpd", "h5py", "lightning", "matplotlib", "np", "numpy", "os",
    "pandas", "pathlib", "pd", "PIL", "pooch", "scanpy", "scipy", "scvi", "sklearn", "sp", "spatialdata", "squidpy", "torch",
    "torch_geometric", "typing", "xarray", "zarr",
)  # fmt: skip
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..+)?"),
    # bare names of other packages' types, as type hints and numpydoc type fields write them
    (r"py:.*", r"AnnData|SpatialData|Figure|Axes|Ellipsis|DataFrame|Series|Tensor|Module|GeoDataFrame|array_like"),
]
intersphinx_disabled_reftypes = ["*"]
suppress_warnings = ["myst.header", "intersphinx", "config.cache"]

# -- HTML --------------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "sslspatial"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "navigation_with_keys": False,
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]


# -- docstring preprocessing --------------------------------------------------------------------------------------
_SECTION = re.compile(r"^(Returns|Yields)\s*$")
_NAME_TYPE = re.compile(r"^\w+\s*:\s*\S")


def _return_type(obj) -> str:
    """The return annotation of ``obj`` as text (``object`` when it has none)."""
    import inspect

    try:
        annotation = inspect.signature(obj).return_annotation
    except (TypeError, ValueError):
        return "object"
    if annotation is inspect.Signature.empty:
        return "object"
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return " ".join(text.split())


def _prose_returns(app, what, name, obj, options, lines: list[str]) -> None:
    """Turn a prose ``Returns`` section into a ``:returns:`` field before napoleon parses it.

    Many docstrings here (as in scanpy) describe what is returned in a paragraph (``Returns`` / ``-------`` / ``The
    trained model.``). Napoleon would read each unindented line of such a paragraph as a separate return *type*, so
    the paragraph is indented under the return annotation (numpy form); sections already in numpy form (``type`` or
    ``name : type`` followed by an indented description) are left as they are.
    """
    i = 0
    while i < len(lines) - 2:
        if not (_SECTION.match(lines[i]) and set(lines[i + 1].strip()) == {"-"}):
            i += 1
            continue
        start = i + 2
        while start < len(lines) and not lines[start].strip():
            start += 1
        end = start
        while end < len(lines) and not (
            end + 1 < len(lines)
            and lines[end].strip()
            and not lines[end].startswith(" ")
            and set(lines[end + 1].strip()) == {"-"}
            and len(lines[end + 1].strip()) >= 3
        ):
            end += 1
        block = lines[start:end]
        numpy_form = bool(block) and (
            _NAME_TYPE.match(block[0]) or (len(block) > 1 and block[1].startswith("    ") and block[1].strip())
        )
        if block and not numpy_form:
            while block and not block[-1].strip():
                block.pop()
            entry = [_return_type(obj), *[("    " + line) if line.strip() else "" for line in block]]
            lines[start:end] = [*entry, ""]
            i = start + len(entry) + 1
        else:
            i = end


# -- internal references ------------------------------------------------------------------------------------------
def _undocumented(target: str) -> bool:
    """Whether ``target`` names an existing object of sslspatial (private, or internal such as a torch module)."""
    import importlib
    import sys

    if target.startswith("sslspatial."):
        parts = target.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for part in parts[i:]:
                    obj = getattr(obj, part)
            except AttributeError:
                return False
            return True
        return False

    head = target.split(".")[0]
    for name, module in list(sys.modules.items()):
        obj = getattr(module, head, None) if name.startswith("sslspatial.") and module is not None else None
        if obj is not None and (getattr(obj, "__module__", None) or "sslspatial").startswith("sslspatial"):
            return True  # a class or function of sslspatial, or a constant (no __module__) of one of its modules
    return False


def _resolve_internal(app, env, node, contnode):
    """Resolve a reference to sslspatial written with a private path or a bare name to its public page.

    Type hints name objects by where they are defined (``sslspatial.pp._subspots.subspot_offsets``); the API pages
    document them where users import them (``sslspatial.pp.subspot_offsets``). A reference to an existing object that
    is deliberately not on the API pages (a torch module class, a private named tuple) renders as plain code; a
    reference to a name that does not exist (a typo, a renamed function) stays unresolved and fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target, py = node.get("reftarget", ""), env.get_domain("py")
    if target.startswith("sslspatial."):
        candidates = [".".join(part for part in target.split(".") if not part.startswith("_"))]
    else:
        candidates = [name for name in py.objects if name.startswith("sslspatial.") and name.endswith("." + target)]
    for candidate in candidates if len(candidates) == 1 else []:
        if candidate != target and (candidate in py.objects or candidate in py.modules):
            ref = py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode)
            if ref is not None:
                return ref
    return contnode if _undocumented(target) else None


def _public_bases(app, name, obj, options, bases: list) -> None:
    """List only public classes under "Bases" (no private mixins such as ``ConsoleMixin``)."""
    import importlib

    def public(cls) -> bool:
        if not cls.__module__.startswith("sslspatial"):
            return True
        package = ".".join(part for part in cls.__module__.split(".") if not part.startswith("_"))
        return getattr(importlib.import_module(package), cls.__name__, None) is cls

    bases[:] = [b for b in bases if public(b)]


def setup(app) -> None:
    """Register the docstring preprocessing (before napoleon, which connects at the default priority 500)."""
    app.connect("autodoc-process-docstring", _prose_returns, priority=100)
    app.connect("missing-reference", _resolve_internal)
    app.connect("autodoc-process-bases", _public_bases)
