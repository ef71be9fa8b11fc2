"""``python -m hasa_results precompute | report [--check] | publish``: the study's command line."""
from __future__ import annotations

from collections.abc import Sequence

from hasa_core import PROFILES, REPO
from hasa_results.experiments import precompute
from hasa_results.outputs import publish
from hasa_results.report import check_report, write_report


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hasa_results", description="The HASA study's commands.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pc = sub.add_parser("precompute", help="every run the notebooks of a profile need, cached")
    pc.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    pc.add_argument("--jobs", type=int, default=2)
    pc.add_argument("--only", nargs="*", help="experiment names (default: all)")
    rp = sub.add_parser("report", help="write results/REPORT.md and refill the README's generated blocks")
    rp.add_argument("--check", action="store_true", help="write nothing; fail if README or REPORT are stale")
    pb = sub.add_parser("publish", help="move a notebook's staged outputs into place (make reproduce does it)")
    pb.add_argument("stage", help="the staging folder, results/.stage-* (relative: to the repository)")
    args = ap.parse_args(argv)
    if args.cmd == "precompute":
        print(f"{precompute(args.profile, args.jobs, only=args.only)} distinct runs cached for profile {args.profile}")
    elif args.cmd == "report" and args.check:
        problems = check_report()
        for p in problems:
            print(f"STALE: {p}")
        if problems:
            raise SystemExit("README/REPORT are stale: run `python -m hasa_results report` (after `make reproduce`)")
        print("README.md and results/REPORT.md match results/; no number typed by hand")
    elif args.cmd == "report":
        print("wrote", ", ".join(str(p.relative_to(REPO)) for p in write_report()))
    else:
        try:
            published = publish(REPO / args.stage)
        except ValueError as e:
            raise SystemExit(f"publish: {e}") from None
        except OSError as e:
            raise SystemExit(f"publish: {e}; nothing was published (the files moved before it were put back)") from None
        print(f"published {len(published)} files from {args.stage}")


if __name__ == "__main__":
    main()
