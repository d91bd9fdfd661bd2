"""Meta-train and evaluate all methods on real image, audio or video signals.

python pipelines/signals.py --modality image
python pipelines/signals.py --modality audio --adapt.max-steps 256   # --modality X = --recipe X
python pipelines/signals.py --recipe audio-quick --meta.inner-steps 8
python pipelines/signals.py --config my.yaml --help
"""

import sys

from mclnf_dist.cli import run_with_clean_errors
from mclnf_dist.jobs.signals import main

if __name__ == "__main__":
    run_with_clean_errors(main, sys.argv[1:])
