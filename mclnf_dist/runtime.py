"""The cluster environment a job hands on to Ray workers, and what it never hands on.

Ray's ``runtime_env`` (job config, task options) is stored in the GCS and shown on the dashboard
to anyone who can reach it, so it carries only non-secret settings: where the S3-compatible
endpoint is and which region. Credentials reach workers through the cluster's own credential
chain: environment variables set on every node before ``ray start`` (``cluster/cluster.env``,
Kubernetes secrets as env), instance profiles (AWS) or service-account roles (IRSA); an embedded
local Ray's workers inherit the driver's environment. See ``cluster/README.md``.
"""

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
