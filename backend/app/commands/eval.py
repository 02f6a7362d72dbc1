"""``touchup eval``: benchmark an engine (or preset) against baselines on reproducible cases.

It runs in-process through the same job function the backend's worker uses, so the numbers
measure what users get without the noise of a transport.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="benchmark an engine against baselines (tables, CSV/JSON, contact sheet, chart)",
        description="Refine reproducible test cases with an engine and with baselines, score "
        "them against the ground truth and write tables and pictures.",
    )
    p.add_argument("--engine", default=None, help="engine name (default: the default engine)")
    p.add_argument("--preset", default=None, help="engine preset (default: the engine's first)")
    p.add_argument("--out", required=True, help="folder for the tables, CSV/JSON and PNGs")
    p.add_argument("--cases", type=int, default=24, help="number of cases (default 24)")
    p.add_argument(
        "--dataset",
        help="folder of your own cases (one folder per case: input, mask, truth, optional "
        "reference*, case.json); default: the built-in set made from scikit-image's photos",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in set (default 0)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of: ours,nothing,naive,overlay,nofocus (default all)",
    )
    p.add_argument("--samples", type=int, default=6, help="cases shown in the contact sheet (default 6)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option (repeatable), as in the config file",
    )
    p.add_argument("--no-perceptual", action="store_true", help="do not look for LPIPS/DreamSim/DINO")
    p.add_argument("--save-cases", help="also write the cases in the --dataset folder layout here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options(pairs: list[str]) -> dict[str, object]:
    import json

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ...engines import DEFAULT_ENGINE, ENGINES, create_engine
    from ...errors import TouchupError
    from ...tools.eval.baselines import METHODS, check_methods
    from ...tools.eval.datasets import DatasetError, builtin_cases, load_folder, save_case_folder
    from ...tools.eval.perceptual import Perceptual
    from ...tools.eval.report import write_report
    from ...tools.eval.runner import run_eval

    name = args.engine or DEFAULT_ENGINE
    if name not in ENGINES:
        print(f"touchup eval: unknown engine {name!r}; known: {', '.join(ENGINES)}", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(METHODS)
    if args.cases < 1:
        print("touchup eval: --cases must be at least 1", file=sys.stderr)
        return 2
    try:
        check_methods(methods)
        engine = create_engine(name, _options(args.option))
        if args.preset is not None and engine.presets and args.preset not in engine.presets:
            print(
                f"touchup eval: engine {name!r} has no preset {args.preset!r}; it has: {', '.join(engine.presets)}",
                file=sys.stderr,
            )
            return 2
        cases = (
            load_folder(args.dataset, args.cases) if args.dataset else builtin_cases(args.cases, args.seed)
        )
    except (DatasetError, ValueError) as exc:
        print(f"touchup eval: {exc}", file=sys.stderr)
        return 2
    if args.save_cases:
        for case in cases:
            save_case_folder(case, f"{args.save_cases}/{case.name}")
    perceptual = Perceptual(enabled=not args.no_perceptual)

    bar = tqdm(total=len(cases) * len(methods), unit="run", disable=args.quiet, desc=f"eval {name}")

    def step(case: str, method: str) -> None:
        bar.set_postfix_str(f"{case[:28]} {method}", refresh=False)
        bar.update(1)

    try:
        result = run_eval(
            cases, engine, args.preset, methods, perceptual=perceptual, keep=args.samples, on_step=step
        )
    except TouchupError as exc:
        print(f"touchup eval: {exc.message}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        engine.unload()
    paths = write_report(result, args.out)
    for path in paths.values():
        print(path)
    if "chart" not in paths:
        print(
            "touchup eval: matplotlib is not installed, so no PNGs were drawn (pip install 'touchup[eval]')"
        )
    for metric, why in result.skipped.items():
        print(f"touchup eval: {metric} skipped: {why}", file=sys.stderr)
    print()
    text = paths["markdown"].read_text(encoding="utf-8")
    print(text.split("\n## By ")[0].split("\n## Metrics")[0].strip())
    return 0
