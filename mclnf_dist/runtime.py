"""The cluster environment a job hands on to Ray workers, and what it never hands on.

Ray's ``runtime_env`` (job config, task options) is stored in the GCS and shown on the dashboard
to anyone who can reach it, so it carries only non-secret settings: where the S3-compatible
endpoint is and which region. Credentials reach workers through the cluster's own credential
chain: environment variables set on every node before ``ray start`` (``cluster/cluster.env``,
Kubernetes secrets as env), instance profiles (AWS) or service-account roles (IRSA); an embedded
local Ray's workers inherit the driver's environment. See ``cluster/README.md``.
"""

import logging
import os

WORKER_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")
"""Environment variables a driver may pass to Ray workers: S3 endpoint and region, no secrets."""

SECRET_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Never passed through ``runtime_env`` (the dashboard shows it); the credential chain has them."""


def worker_env() -> dict[str, str]:
    """The driver's S3 endpoint and region, for ``runtime_env={"env_vars": ...}``.

    Only with ``AWS_ENDPOINT_URL`` set (an S3-compatible server, e.g. MinIO, that workers started
    before this driver must reach the same way); on AWS itself workers need nothing from the
    driver. Credentials are never included (see the module docstring).
    """
    if not os.environ.get("AWS_ENDPOINT_URL"):
        return {}
    return {k: os.environ[k] for k in WORKER_SETTINGS if k in os.environ}


def ensure_ray(worker_logs: bool = False, num_cpus: int | None = None) -> None:
    """Join the cluster at ``RAY_ADDRESS``, or start an embedded local Ray (laptop default):
    the one place a job starts Ray, so every entry point gets the same settings.

    Args:
        worker_logs: forward what Ray's workers and actors print (Ray Train's controller and
            per-round reports among them) to this driver. Off by default: the driver prints the
            progress people need; ``--verbose`` turns it on.
        num_cpus: CPUs of an embedded Ray; None: all of this machine's.
    """
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": worker_logs, "logging_level": "INFO" if worker_logs else "WARNING"}
    if os.environ.get("RAY_ADDRESS"):
        # The cluster's workers predate this driver's S3 endpoint settings (MinIO, a test's S3
        # server): hand on the endpoint and region, never credentials (the dashboard shows a
        # runtime env; workers get credentials from their nodes). A submitted job's own runtime
        # env already carries its settings.
        env = {} if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ else worker_env()
        runtime_env = {"env_vars": env} if env else None
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env, **quiet)
    else:
        # Ray 2.60 turns token authentication on for a new local cluster (kept on) and says so
        # in a warning on every start: the one line of that module a new cluster prints.
        token_setup = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = token_setup.level
        token_setup.setLevel(logging.INFO if worker_logs else logging.ERROR)
        try:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **quiet)
        finally:
            token_setup.setLevel(level)
