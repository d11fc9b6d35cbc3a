"""``kvsweep`` command line: one subcommand per module, imported only when used.

Each command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Bad input is a
:class:`simcore.errors.ConfigError`: printed as one line on stderr, exit code 2, no traceback.

Exit codes: 0 done (every run ok or infeasible); 1 some run failed (or a single simulation was
infeasible); 2 bad input or an unwritable output location, nothing run; 3 writing failed in the
middle of a sweep (a full disk: finished runs are kept in whole parts); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from simcore.errors import ConfigError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("sweep.cmd_simulate", "run one simulation and print its summary"),
    "plan": ("sweep.cmd_run", "expand a sweep spec and show the runs without running them"),
    "run": ("sweep.cmd_run", "run a sweep on Ray (or serially) into a Parquet dataset"),
    "report": ("sweep.cmd_report", "write an HTML report of a sweep's dataset"),
    "query": ("sweep.cmd_report", "run a DuckDB SQL query over a sweep's dataset"),
    "replay": ("sweep.cmd_replay", "cache-only replay of a request trace: hit rate per capacity"),
    "calibrate": ("sweep.cmd_calibrate", "fit the cost model to measured latencies; write a profile"),
    "validate": ("sweep.cmd_validate", "compare kvsweep with real vLLM servers and Mooncake's Figure 9"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvsweep", description=__doc__.splitlines()[0])
    from simcore import __version__

    parser.add_argument("--version", action="version", version=f"kvsweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(p)
        p.set_defaults(_main=getattr(module, f"main_{name}", None) or module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except ConfigError as exc:
        print(f"kvsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kvsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
