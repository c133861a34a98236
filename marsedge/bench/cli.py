"""`marsedge bench` and `marsedge report` (nothing heavy imported until a handler runs).

    marsedge bench teacher.pt teacher.onnx student.int8.onnx --data DATA --split gold-min3 -o OUT
    marsedge report OUT/results.json [BASELINE/results.json ...] -o report [--screenshot report.png]

bench exits 0 when every model ran (ok or accuracy-failed) and 1 when any could not run; its
results.json and report are written either way. A `.pt` given without an ONNX export of it is
exported to OUT/<name>.onnx and benched too (marsedge.bench.exports; --no-export: not). An INT8
row is judged by the one INT8 verdict (marsedge.edge.verdict); pixel agreement is information.
`marsedge report` with one results file only re-renders it; with baselines it compares.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="latency + accuracy of models (.pt/.onnx/.engine) -> report",
                                  description=__doc__.splitlines()[0])
    bench.add_argument("models", nargs="+", metavar="MODEL", help=".pt, .onnx (FP32/INT8) or .engine files")
    bench.add_argument("--data", required=True,
                       help="AI4Mars-layout dataset root (an MSL surface release for classifiers)")
    bench.add_argument("--split", default="gold-min3",
                       help="labelled split (default gold-min3; test for an MSL surface release)")
    bench.add_argument("--size", type=int, default=None,
                       help="expected square input size; a model built for another size fails its row "
                            "(default: each model's own preprocessing spec)")
    bench.add_argument("--warmup", type=int, default=10,
                       help="untimed frames first (default 10; with --duration, at most that many seconds)")
    how_long = bench.add_mutually_exclusive_group()
    how_long.add_argument("--duration", type=float, default=10.0,
                          help="timed seconds per model (default 10)")
    how_long.add_argument("--iters", type=int, default=None,
                          help="timed frames per model (instead of --duration)")
    bench.add_argument("--threads", type=int, default=None, help="backend threads (default: the backend's)")
    bench.add_argument("--backend", default=None, help="force a backend instead of the runtime the model's "
                       "metadata names (else its file suffix)")
    bench.add_argument("--reference", default=None,
                       help="model whose masks every other is compared with, pixel agreement as information "
                            "(default: per model, the first given model of the same architecture)")
    bench.add_argument("--no-export", action="store_true",
                       help="do not export a .pt given without its ONNX (default: export it to OUT, so the "
                            "report has a like-for-like ONNX Runtime row)")
    bench.add_argument("--min-miou", type=float, default=None,
                       help="accuracy gate: mIoU floor (top-1 floor for classifiers; default none)")
    bench.add_argument("--samples", type=int, default=4, help="frames in the sample strip (default 4)")
    bench.add_argument("--timeout", type=float, default=1800.0, help="seconds per model before it fails")
    bench.add_argument("--keep-masks", action="store_true", help="keep every model's masks in OUT/.masks")
    bench.add_argument("-o", "--out", default="runs/bench", help="output folder (default runs/bench)")
    bench.add_argument("--overwrite", action="store_true", help="replace the results already in OUT")
    bench.set_defaults(func=run_bench)

    report = subparsers.add_parser("report", help="results.json files -> report.md + report.html",
                                   description="the first file is this run; any others are baselines")
    report.add_argument("results", nargs="+", metavar="RESULTS.json")
    report.add_argument("-o", "--out", default="report", help="output folder (default report)")
    report.add_argument("--latency-tol", type=float, default=0.10,
                        help="regression when p50 grows by more than this fraction (default 0.10)")
    report.add_argument("--miou-tol", type=float, default=0.01,
                        help="regression when mIoU drops by more than this (default 0.01)")
    report.add_argument("--screenshot", default=None, metavar="PNG",
                        help="also save a headless-Chromium screenshot of report.html")
    report.add_argument("--overwrite", action="store_true",
                        help="replace report.md/report.html already in the output folder (bench writes "
                             "them beside results.json) and an existing --screenshot PNG")
    report.set_defaults(func=run_report)


def summary_lines(results: dict) -> list[str]:
    from marsedge.metrics import headline

    scored = [r["accuracy"]["metrics"] for r in results["models"] if r.get("accuracy")]
    key, label = headline(scored[0]) if scored else ("miou", "mIoU")
    d = results["dataset"]
    lines = [f"{label} as a fraction (0-1) on {d['split']} of {d['root']} ({d['frames']} frames)",
             f"{'model':<28} {'backend':<12} {'precision':<9} {'p50 ms':>8} {label:>7}  status"]
    for r in results["models"]:
        p50 = f"{r['latency']['end_to_end']['p50']:.2f}" if r.get("latency") else "–"
        miou = f"{r['accuracy']['metrics'][key]:.4f}" if r.get("accuracy") else "–"
        status = r["status"] + (f" ({r['reason']})" if r.get("reason") else "")
        lines.append(f"{r['id']:<28} {r.get('backend') or '–':<12} {r.get('precision') or '–':<9} "
                     f"{p50:>8} {miou:>7}  {status}")
    for r in results["models"]:
        judged = r.get("int8_verdict")
        if judged:
            lines.append(f"{r['id']}: {verdict_line(judged)}")
    return lines


def verdict_line(judged: dict) -> str:
    """quantize's verdict (recorded in the model) and bench's, by the same rule, on one line."""
    from marsedge.edge.verdict import Int8Verdict

    bench = Int8Verdict.from_dict(judged["bench"]).line() + f" against {judged['reference']}"
    if not judged.get("quantize"):
        return bench + "; quantize recorded no verdict"
    return f"{Int8Verdict.from_dict(judged['quantize']).line()} (quantize); {bench} (bench)"


def run_bench(args: argparse.Namespace) -> int:
    from marsedge.bench import results as R
    from marsedge.bench import runner
    from marsedge.bench.exports import export_missing_onnx
    from marsedge.bench.report import write_report
    from marsedge.ownership import OutputLock, refuse_existing, refuse_same_path

    settings = runner.BenchSettings(
        data=args.data, split=args.split, size=args.size, warmup=args.warmup,
        iters=args.iters, duration=None if args.iters else args.duration, threads=args.threads,
        backend=args.backend, reference=args.reference, min_miou=args.min_miou, samples=args.samples,
        timeout=args.timeout, keep_masks=args.keep_masks)
    out = Path(args.out)
    refuse_same_path(args.data, out, "bench output")  # results, samples and masks never land in the dataset
    with OutputLock(out, "bench"):
        refuse_existing(out / "results.json", args.overwrite, "the results of an earlier bench")
        models = args.models if args.no_export else export_missing_onnx(args.models, out)
        results = runner.run_bench(models, settings, out)
        md, page = write_report([results], [out / "results.json"], out)
    print("\n".join(summary_lines(results)))
    print(f"wrote {out / 'results.json'}, {md}, {page}")
    return 1 if any(r["status"] == R.STATUS_FAILED for r in results["models"]) else 0


def run_report(args: argparse.Namespace) -> int:
    from marsedge.bench.compare import check_comparable
    from marsedge.bench.report import write_report
    from marsedge.bench.results import load_results
    from marsedge.ownership import OutputLock, refuse_existing, refuse_same_path

    sources = [Path(p) for p in args.results]
    results = [load_results(p) for p in sources]
    for source, baseline in zip(sources[1:], results[1:], strict=True):
        check_comparable(results[0], baseline, str(sources[0]), str(source))
    out = Path(args.out)
    written = [out / "report.md", out / "report.html"]
    if args.screenshot:
        for other in (*sources, *written):
            refuse_same_path(other, args.screenshot, "screenshot")
    with OutputLock(out, "report"):  # not while a bench or another report writes there
        for path in written:
            refuse_existing(path, args.overwrite, "report")
        if args.screenshot:
            refuse_existing(args.screenshot, args.overwrite, "screenshot")
        if len(sources) == 1:
            print(f"no baseline given: re-rendering {sources[0]} (nothing is compared; give a baseline "
                  "results.json after it to compare)")
        md, page = write_report(results, sources, out, args.latency_tol, args.miou_tol)
        print(f"wrote {md}, {page}")
        if args.screenshot:
            from marsedge.bench.browser import screenshot

            print(f"wrote {screenshot(page, args.screenshot)}")
    return 0
