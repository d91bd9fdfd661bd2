"""What a driver hands to Ray workers through ``runtime_env``: never a credential."""

from mclnf_dist.runtime import SECRET_SETTINGS, worker_env


def test_worker_env_carries_endpoint_and_region_but_no_secret(monkeypatch):
    secrets = {name: f"secret-{name.lower()}" for name in SECRET_SETTINGS}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)  # the test S3 server sets one
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert worker_env() == {}  # AWS itself: workers need nothing from the driver

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    env = worker_env()
    assert env == {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"}
    assert not set(env) & set(SECRET_SETTINGS)
    assert not set(env.values()) & set(secrets.values())
    names = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert set(SECRET_SETTINGS) == names
