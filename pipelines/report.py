"""The results report: every method on real images, audio, video and the city -> docs/results.md.

python pipelines/report.py --quick      # 2 CPUs, under 45 minutes (docs/results.md says how long)
python pipelines/report.py              # full budgets (a GPU or a cluster)
python pipelines/report.py --sections faces city --quick
"""

import sys

from mclnf_dist.cli import run_with_clean_errors
from mclnf_dist.jobs.report import main

if __name__ == "__main__":
    run_with_clean_errors(main, sys.argv[1:])
