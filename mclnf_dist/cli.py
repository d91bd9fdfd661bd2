"""The ``mclnf`` console script: a thin dispatcher to each subcommand's own ``main(argv)``.

Subcommands are imported lazily so ``mclnf --help`` stays fast and a broken optional part cannot
stop the others. A generated (tyro) dispatcher would need every job's config types at parse time,
i.e. importing every job (torch, Ray, MLflow: seconds each) before printing a usage line, and each
job already owns its parser (``config.parse_config`` or tyro), so this table is all it needs.
A :class:`~mclnf_dist.errors.MclnfError` becomes one ``error:`` line and exit 2.
"""

import importlib
import sys

from mclnf_dist.errors import MclnfError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "signals": ("mclnf_dist.jobs.signals", "meta-train and evaluate on image/audio/video"),
    "dataset": ("mclnf_dist.jobs.dataset", "make-city | ingest | info | verify: ray stores"),
    "city": ("mclnf_dist.jobs.city", "the main job: meta-continual city NeRF on Ray"),
    "sweep": ("mclnf_dist.sweeps.driver", "Ray Tune sweeps over tune_spaces/*.yaml, in MLflow"),
    "choose-plan": (
        "mclnf_dist.sweeps.plan_selection",
        "the one adaptation plan of a modality or the city, chosen on validation data",
    ),
    "render": ("mclnf_dist.jobs.render", "render a saved city model along cameras: PNGs + MP4"),
    "view": ("mclnf_dist.jobs.view", "a saved city model in the browser (viser), live"),
    "report": ("mclnf_dist.jobs.report", "every method, every modality -> docs/results.md"),
}


def main(argv: list[str] | None = None) -> None:
    """Run ``mclnf <subcommand> [args...]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
        print("usage: mclnf <subcommand> [args...]\n\nsubcommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"error: unknown subcommand {argv[0]!r} (expected one of {', '.join(SUBCOMMANDS)})",
                file=sys.stderr,
            )
            sys.exit(2)
        return
    module_name, _ = SUBCOMMANDS[argv[0]]
    run_with_clean_errors(importlib.import_module(module_name).main, argv[1:])


def run_with_clean_errors(entry, argv: list[str]) -> None:
    """Call ``entry(argv)``; turn an :class:`MclnfError` into one line on stderr and exit 2, and
    Ctrl-C (or SIGTERM) into one line saying how to resume and exit 130 (143)."""
    from mclnf_dist.interrupts import Terminated, interrupt_message

    try:
        entry(argv)
    except MclnfError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        print(f"\nstopped: {interrupt_message()}", file=sys.stderr, flush=True)
        sys.exit(143 if isinstance(err, Terminated) else 130)


if __name__ == "__main__":
    main()
