"""The ``sslspatial`` command line.

Each capability contributes a module ``sslspatial.cli._<name>`` exposing ``register(subparsers)`` (its subcommands,
operating on a SpatialData zarr path in place) and optionally ``demo(sdata, out_dir) -> dict`` (its step of
``sslspatial demo`` on the synthetic tissue, returning accuracy figures against the synthetic truth).

Arguments are parsed before anything heavy is imported: this module and the ``register`` functions use argparse
only, and each subcommand imports the scientific stack inside its ``run`` function. Every failure ends as one line on
stderr (``sslspatial <command>: error: ...``) and a non-zero exit code: 2 for usage errors, 1 for data errors, 130 on
interruption; ``--debug`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import warnings
from types import ModuleType

from ._common import CLIError, one_line

CAPABILITIES = ("pretrain", "hist2expr", "superres")  # each has a step of `sslspatial demo`
# every module contributing subcommands, in the order of `sslspatial --help`
COMMAND_MODULES = ("info", "demo", "dataset", "graph", "pretrain", "domains", "hist2expr", "superres")


class _HelpFormatter(argparse.HelpFormatter):
    """Show each option's default after its help, unless the help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text.lower()
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or isinstance(default, bool)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit with code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # pipelines should not depend on prefixes of option names
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _debug_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error instead of a one-line message",
    )
    return parent


class _Commands(argparse._SubParsersAction):
    """Sub-commands with the package's formatter and a ``--debug`` flag after the command too."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("parents", [_debug_parent()])
        if "help" in kwargs and "description" not in kwargs:
            kwargs["description"] = kwargs["help"]
        return super().add_parser(name, **kwargs)


def capability_modules() -> dict[str, ModuleType]:
    """Return the CLI modules of the capabilities that are installed, by name (argparse only: cheap to import)."""
    modules = {}
    for name in CAPABILITIES:
        if importlib.util.find_spec(f"sslspatial.cli._{name}") is not None:
            modules[name] = importlib.import_module(f"sslspatial.cli._{name}")
    return modules


def _version() -> str:
    from .. import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = _Parser(
        prog="sslspatial",
        description=(
            "Self-supervised and generative deep learning for spatial omics on SpatialData. Each command works on a "
            "SpatialData zarr store in place; `sslspatial dataset` writes the first store. Exit codes: 0 success, "
            "1 data error, 2 usage error."
        ),
    )
    parser.register("action", "parsers", _Commands)
    parser.add_argument("--version", action="version", version=f"sslspatial {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error instead of a one-line message"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"sslspatial.cli._{name}") is not None:
            importlib.import_module(f"sslspatial.cli._{name}").register(subparsers)
    return parser


def as_options(message: str, command_parser: argparse.ArgumentParser) -> str:
    """Rewrite the Python spelling of the command's own options in a library message.

    ``n_neighs=6`` becomes ``--n-neighs 6``, ``overwrite=True`` ``--overwrite`` and ``path=None`` ``no --path`` (the
    option left out), so a hint reads as something to type.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--n-neighs"), p.add_argument("--overwrite", action="store_true")
    >>> as_options("pass n_neighs=6, or overwrite=True.", p)
    'pass --n-neighs 6, or --overwrite.'
    >>> as_options("or n_neighs=None for the default", p)
    'or no --n-neighs for the default'
    """
    import re

    for action in command_parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if not long or action.dest in ("help", "debug"):
            continue
        option = long[0]
        if isinstance(action, argparse._StoreTrueAction):
            message = re.sub(rf"(?<![\w.-]){re.escape(action.dest)}=True\b", option, message)
        else:  # name=None is the option left out
            message = re.sub(rf"(?<![\w.'\"-]){re.escape(action.dest)}=None\b", f"no {option}", message)
            message = re.sub(rf"(?<![\w.'\"-]){re.escape(action.dest)}=", f"{option} ", message)
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sslspatial`` command; returns the exit code (argparse exits with 2 on usage errors)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command_parser = next(a for a in parser._actions if isinstance(a, _Commands)).choices[args.command]
    if extra:  # report unknown options against the subcommand, whose --help lists the right ones
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = bool(getattr(args, "debug", False))
    prog = f"sslspatial {args.command}"
    from .._devices import is_main_process

    if not is_main_process():  # an extra process of distributed training: the main one reports and writes
        sys.stdout = open(os.devnull, "w")
    from .._warnings import quiet_dependencies, set_verbose

    set_verbose(debug)  # --debug: every warning and log line of the dependencies too
    quiet_dependencies()
    format_before, show_before = warnings.formatwarning, warnings.showwarning

    def one_line_warning(message, category, *_args, **_kwargs) -> str:
        return f"{prog}: warning: {as_options(' '.join(str(message).split()), command_parser)}\n"

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(one_line_warning(message, category), end="", file=sys.stderr)

    if not debug:  # warnings as one line each, like the errors, on stderr (also where warnings are recorded)
        warnings.formatwarning = one_line_warning
        warnings.showwarning = show
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line and an exit code
        if debug:
            import traceback

            traceback.print_exc()
        from .._arguments import ArgumentError

        if isinstance(error, ArgumentError):  # a value out of range: a usage error, named as an option
            print(f"{prog}: error: {as_options(error.cli_message(), command_parser)}", file=sys.stderr)
            return 2
        code = error.exit_code if isinstance(error, CLIError) else 1
        hint = "" if debug or isinstance(error, CLIError) else " (run with --debug for the traceback)"
        message = one_line(error) if isinstance(error, CLIError) else as_options(one_line(error), command_parser)
        print(f"{prog}: error: {message}{hint}", file=sys.stderr)
        return code
    finally:
        warnings.formatwarning, warnings.showwarning = format_before, show_before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
