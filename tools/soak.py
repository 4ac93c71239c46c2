"""Soak: the kill -9 loop of ``tests/test_crash.py``, for hundreds of kills.

    PYTHONPATH=.:tests python tools/soak.py --kills 200 --seed 1

Runs the node as its own process against a real Orthanc (both need to be installed, as
for the tests), SIGKILLs it at the moments ``tests/crashloop.py`` aims at and at random
ones, restarts it, resends what was not acknowledged, and at the end checks every study
and prints the tally. Exits 1 when anything acknowledged was lost, duplicated, or did
not end as exactly one complete synthetic series at the destination.

The loop itself is ``tests/crashloop.py``, shared with the CI test, so the soak run and
the test can never drift apart; this file only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (200)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep node, Orthanc and studies here"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final tally")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a bar of the kills delivered on stderr (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    shown = sys.stderr.isatty() if args.progress is None else args.progress

    sys.path[:0] = [str(TESTS), str(TESTS.parent)]
    from crashloop import CrashLoop  # after tests/ is on sys.path

    # stop cleanly (node, Orthanc and the work folder go) on SIGTERM, and on SIGINT even
    # when started in the background, where the shell makes the process ignore it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"soak: {args.kills} kills, seed {seed}", flush=True)
    started = time.monotonic()
    bar = tqdm(total=args.kills, desc="soak", unit="kill", file=sys.stderr, disable=not shown)

    def progress(line: str) -> None:
        """Prints the loop's line (above the bar, when one is drawn) and moves the bar
        to the kills delivered so far (more than asked when covering every target)."""
        kills = loop.tally.total_kills
        if kills > bar.n:
            bar.total = max(bar.total, kills)
            bar.update(kills - bar.n)
        if not args.quiet:
            text = f"[{time.monotonic() - started:7.1f} s] {line}"
            if shown:
                tqdm.write(text)
            else:
                print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="dicom-node-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        loop = CrashLoop(workdir, seed, log=progress)
        with loop:
            tally = loop.run(args.kills, cover_every_target=True)
    bar.close()
    print(tally.table(), flush=True)
    return 1 if tally.problems else 0


if __name__ == "__main__":
    sys.exit(main())
