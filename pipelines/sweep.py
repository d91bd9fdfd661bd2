"""Hyperparameter sweeps with Ray Tune (ASHA, random or Optuna search), tracked in MLflow.

python pipelines/sweep.py --space tune_spaces/city.yaml --num-samples 8
python pipelines/sweep.py --space tune_spaces/image.yaml --search optuna
python pipelines/sweep.py --space tune_spaces/city.yaml --rerun outputs/sweeps/city/best_config.yaml
Re-running the same command resumes an interrupted sweep.
"""

import sys

from mclnf_dist.cli import run_with_clean_errors
from mclnf_dist.sweeps.driver import main

if __name__ == "__main__":
    run_with_clean_errors(main, sys.argv[1:])
