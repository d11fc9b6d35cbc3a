"""``kvsweep`` command line: one subcommand per module, imported only when used.

Each command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Bad input is a
:class:`simcore.errors.ConfigError`: printed as one line on stderr, exit code 2, no traceback.
Argument errors (a missing or unknown option, a bad value) are one line too, with a "did you
mean" for a misspelt command.

Exit codes: 0 done (every run ok or infeasible); 1 some run failed (or a single simulation was
infeasible); 2 bad input or an unwritable output location, nothing run; 3 writing failed in the
middle of a sweep (a full disk: finished runs are kept in whole parts); 130 interrupted; 141 the
reader of stdout went away (``kvsweep query ... | head``), as for a program killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
from typing import NoReturn

from simcore.errors import ConfigError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("sweep.cmd_simulate", "run one simulation and print its summary"),
    "plan": ("sweep.cmd_run", "expand a sweep spec, show its runs and estimate the time, running nothing"),
    "run": ("sweep.cmd_run", "run a sweep (grid or SLO capacity search) on Ray into a Parquet dataset"),
    "report": ("sweep.cmd_report", "write an HTML report of a sweep's dataset"),
    "query": ("sweep.cmd_report", "run a DuckDB SQL query over a sweep's dataset"),
    "replay": ("sweep.cmd_replay", "cache-only replay of a request trace: hit rate per capacity"),
    "calibrate": ("sweep.cmd_calibrate", "fit the cost model to measured latencies; write a profile"),
    "validate": ("sweep.cmd_validate", "compare kvsweep with real vLLM servers and Mooncake's Figure 9"),
}

DESCRIPTION = """\
kvsweep simulates a vLLM-style LLM server (continuous batching, paged KV cache, prefix caching)
under chat workloads and request traces, and runs grids of such simulations on Ray, one Parquet
row per run, to show what prefix caching buys: latency, throughput and capacity at an SLO."""

EPILOG = """\
examples:
  kvsweep simulate configs/runs/chat.yaml --set workload.users=32
  kvsweep plan configs/sweeps/quickstart.yaml
  kvsweep run configs/sweeps/quickstart.yaml --out results/quickstart
  kvsweep report results/quickstart --slo "ttft_p99_s<1"
  kvsweep query results/quickstart 'SELECT "model.name", avg(ttft_p99_s) FROM runs GROUP BY 1'

`kvsweep COMMAND --help` describes each command. Exit status: 0 done, 1 some run failed,
2 bad input (nothing run), 3 output failed mid-sweep, 130 interrupted."""

EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program that wrote into a closed pipe
_CHOICE_RE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command and the way out."""

    def error(self, message: str) -> NoReturn:
        found = _CHOICE_RE.search(message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            close = difflib.get_close_matches(found.group(1), choices, n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        if message.startswith("the following arguments are required: COMMAND"):
            message = "give a command: " + ", ".join(COMMANDS)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kvsweep", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    from simcore import __version__

    parser.add_argument("--version", action="version", version=f"kvsweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(p)
        p.set_defaults(_main=getattr(module, f"main_{name}", None) or module.main)
    return parser


def _pipe_closed() -> int:
    """stdout's reader went away (``| head``): send what is left to /dev/null, so Python's final
    flush does not print a second error, and exit as a program killed by SIGPIPE would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture): nothing to do
        pass
    return EXIT_PIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        code = int(args._main(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here for short outputs
        return code
    except ConfigError as exc:
        print(f"kvsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _pipe_closed()
    except KeyboardInterrupt:
        print(f"kvsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
