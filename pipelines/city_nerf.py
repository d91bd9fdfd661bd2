"""The main job: meta-continual learning of a city-scale NeRF on Ray.

python pipelines/city_nerf.py                      # laptop: embedded Ray, demo city, sqlite MLflow
ray job submit --working-dir . -- python pipelines/city_nerf.py   # a cluster (RAY_ADDRESS)
python pipelines/city_nerf.py --help               # every option
"""

import sys

from mclnf_dist.cli import run_with_clean_errors
from mclnf_dist.jobs.city import main

if __name__ == "__main__":
    run_with_clean_errors(main, sys.argv[1:])
