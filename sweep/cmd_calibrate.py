"""``kvsweep calibrate DATA --gpu NAME --out profile.yaml``: fit the cost model to measured data.

DATA is one of the formats of :mod:`sweep.measured` (stage means of serving experiments, step
times, or per-operator times; ``--format auto`` tells them apart by extension and columns). The
fit moves the parameters the format can pin down (``--fit`` names others), starting from a base
profile (``--base``, default the GPU's own), on the training points of the fixed split; it
prints the parameters, the training and held-out errors, and writes a profile a run can use::

    engine:
      cost:
        profile: profile.yaml       # every value from the file; fields set here override it
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from simcore.config import COST_FIELDS
from simcore.errors import ConfigError
from sweep import calibrate, measured
from sweep.calibrate import Dataset, FitResult, Point


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="measured data: stages JSON, steps CSV or operators CSV")
    parser.add_argument(
        "--gpu", required=True, help="catalog GPU the data was measured on (e.g. H100-SXM-80GB)"
    )
    parser.add_argument("--out", required=True, help="where to write the fitted profile (YAML)")
    parser.add_argument("--format", choices=["auto", "stages", "steps", "operators"], default="auto")
    parser.add_argument(
        "--base", help="profile to start from and keep unfitted values of (default: the GPU's)"
    )
    parser.add_argument(
        "--fit", help="comma-separated parameters to fit (default: what the format pins down)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="fix a parameter before fitting (repeatable), e.g. cuda_graph_max_tokens=64",
    )
    parser.add_argument("--model", help="steps format: the catalog model the step times are of")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="steps format: keep only rows with this column value (repeatable)",
    )
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COL=VALUE[,COL=VALUE]",
        help="steps format: leave out rows matching all these pairs (repeatable)",
    )
    parser.add_argument(
        "--stage-seconds",
        type=float,
        default=300.0,
        help="stages format: cut each load stage to this many seconds while fitting (default 300)",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="stages format: parallel simulations (default: CPUs)"
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=0,
        help="optimiser starting points (default: 6 for step and operator data, 1 for stages)",
    )
    parser.add_argument("--name", help="the profile's name (default: the output file's stem)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r}: write COLUMN=VALUE")
        out[key.strip()] = value.strip()
    return out


def detect_format(path: Path) -> str:
    """``stages`` for JSON; for CSV, ``steps`` when it has prompt_time, ``operators`` when it
    has Vidur's time_stats columns."""
    if path.suffix.lower() == ".json":
        return "stages"
    header = measured.read_csv(path).columns
    if "prompt_time" in header:
        return "steps"
    if any(str(c).startswith("time_stats.") for c in header):
        return "operators"
    raise ConfigError(
        f"{path}: not a known format (stages JSON, steps CSV with prompt_time, "
        "operators CSV with time_stats.* columns); see sweep/measured.py"
    )


def load_dataset(args: argparse.Namespace, fmt: str) -> Dataset:
    path = Path(args.data)
    if fmt == "stages":
        exps = measured.load_experiments(path)
        return calibrate.StageMeans(
            exps, args.gpu, str(path), max_stage_s=args.stage_seconds or None, workers=args.workers or None
        )
    if fmt == "operators":
        return calibrate.OperatorTimes(measured.load_operator_profile(path), args.gpu, str(path))
    if not args.model:
        raise ConfigError(
            "steps data needs --model: the catalog model the step times are of (e.g. Llama-2-70B)"
        )
    drop = [_pairs(d.split(","), "--drop") for d in args.drop]
    return calibrate.load_steps(path, args.model, args.gpu, _pairs(args.where, "--where"), drop)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_fit(res: FitResult) -> None:
    print(f"{'parameter':<30} {'base':>12} {'fitted':>12}")
    for name in res.fitted:
        print(f"{name:<30} {_fmt(res.base[name]):>12} {_fmt(res.params[name]):>12}")


def print_errors(title: str, points: list[Point]) -> None:
    if not points:
        print(f"{title}: none")
        return
    parts = [
        f"{m} median |error| {s['median_abs']:.1%}, worst {s['worst']:+.1%} (n={s['n']})"
        for m, s in calibrate.summary(points).items()
    ]
    print(f"{title}: " + "; ".join(parts))


def print_points(points: list[Point], limit: int = 40) -> None:
    """Every point, or the ``limit`` worst by size of error when there are more."""
    shown = points if len(points) <= limit else sorted(points, key=lambda p: -abs(p.error))[:limit]
    if len(shown) < len(points):
        print(f"  (the {limit} worst of {len(points)})")
    for p in shown:
        note = f"  [{p.note}]" if p.note else ""
        print(
            f"  {p.label:<52} {p.metric:<8} measured {p.measured:10.2f}  predicted {p.predicted:10.2f}"
            f"  {p.error:+7.1%}{note}"
        )


def main(args: argparse.Namespace) -> int:
    path = Path(args.data)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (give measured data: see sweep/measured.py for the formats)")
    fmt = detect_format(path) if args.format == "auto" else args.format
    ds = load_dataset(args, fmt)
    base = calibrate.base_params(args.base, args.gpu)
    fixed = {k: _value(v) for k, v in _pairs(args.set, "--set").items()}
    unknown = [k for k in fixed if k not in COST_FIELDS]
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: not a cost parameter (use one of {', '.join(COST_FIELDS)})")
    base.update(fixed)
    calibrate.validate_params(base, "--set")
    names = [n.strip() for n in args.fit.split(",")] if args.fit else list(ds.default_fit)
    calibrate.check_names(names, "--fit")
    keys = ds.keys()
    held = sum(calibrate.held_out(k) for k in keys)
    print(
        f"kvsweep calibrate: {ds.describe()} ({fmt} format, {len(keys)} keys: {len(keys) - held} to fit, "
        f"{held} held out)"
    )
    print(f"fitting {len(names)} parameters from profile {base['profile']!r}; the rest stay as they are")
    starts = args.starts or (1 if fmt == "stages" else 6)
    res = calibrate.fit(ds, base, names, starts=starts)
    print_fit(res)
    for group in res.confounded:
        print(f"warning: the data cannot tell {', '.join(group)} apart: their fitted values are one of many "
              "that fit as well (fix some with --set, or add data that separates them)")
    print_errors("training points", res.train)
    print_errors("held-out points", res.test)
    if res.test:
        print("held-out points, one by one:")
        print_points(res.test)
    name = args.name or Path(args.out).stem
    source = f"kvsweep calibrate {path.name} --gpu {args.gpu} ({fmt}; fitted {', '.join(names)})"
    doc = calibrate.profile_document(res, name=name, gpu=args.gpu, source=source)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--out {out}: cannot write it ({exc.strerror})") from None
    print(f"wrote {out}: use it with engine.cost.profile: {out}")
    return 0
