"""One process of a unit of several (``launcher.gpus_per_unit`` > 1), started by torchrun
inside the unit's job: ``python -m dpkd_bench.launchers.torchrun_unit JOB.json``.

A module of its own, so that ``dpkd_bench.launchers.job`` is not also run as ``__main__`` (a
second copy of its classes).
"""

from __future__ import annotations

import sys

from dpkd_bench.launchers.job import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
