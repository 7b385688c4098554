from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
# The fast tier (`make test-fast`: pytest -m "not slow") leaves out every test that starts Ray, a search, a
# cluster or an S3 server: they are marked slow here by the fixtures they use, the rest by `pytestmark`.
SLOW_FIXTURES = {"ray_session", "s3_endpoint", "cluster"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
TINY100 = SHARED / "datasets" / "tiny100"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Scan caches and the built-in dataset go to one per-session temp dir, never ~/.cache."""
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # The plan's forecast times a few batches of every backbone in a child process (search/forecast.py):
    # seconds per plan. Off here; tests/test_cost_forecast.py turns it on where it is the subject.
    monkeypatch.setenv("RESNET_SEARCH_CALIBRATE", "0")


requires_tiny100 = pytest.mark.skipif(not TINY100.exists(), reason="../shared/datasets/tiny100 is absent (fresh clone)")


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=12, val_per_class=4, size=24,
                      test=6, seed=0, noise=30.0) -> Path:
    """A learnable toy dataset: each class has its own colour plus noise. Returns root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 255, size=(len(classes), 3))
    def save(path, k):
        pixels = np.clip(palette[k] + rng.normal(0, noise, size=(size, size, 3)), 0, 255).astype("uint8")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    for k, name in enumerate(classes):
        for i in range(per_class):
            save(root / "train" / name / f"{i}.png", k)
        for i in range(val_per_class):
            save(root / "val" / name / f"{i}.png", k)
    for i in range(test):
        save(root / "test" / f"t{i:03d}.png", i % len(classes))
    return root


@pytest.fixture
def toy_data(tmp_path):
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test that runs a search (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def fit_with_one_retry(trainable, config: dict, storage: Path, name: str, keep: int = 1) -> list:
    """Runs `config` (a grid) under Tune as the search does: one retry from the latest checkpoint, the `keep`
    best checkpoints kept, and the search's TrialLogsKept (without it, Tune's restart of the retried trial
    replaces its result.json with storage's copy, which may lack the epochs since the last sync: a fresh
    clone's CI run lost the failed attempt's epoch 2 that way). Returns Tune's results; every trial must have
    ended without an error."""
    from ray import tune

    from search.trial_logs import TrialLogsKept

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}), param_space=config,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0, failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[TrialLogsKept()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute="val_acc",
                                                    checkpoint_score_order="max")))
    results = list(tuner.fit())
    assert all(r.error is None for r in results), [r.error for r in results]
    return results


def reported_rows(result) -> list[dict]:
    """What a trial reported to Tune, in order (its result.json)."""
    import json

    return [json.loads(line) for line in (Path(result.path) / "result.json").read_text().splitlines()]


S3_BUCKET = "search-bucket"
# Dummy keys for moto's S3 server; no instance-metadata lookups (they would wait for a timeout off EC2).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                  "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free localhost port, with bucket S3_BUCKET: its 'host:port' for endpoint_override.
    Started and stopped here; processes that use it need S3_CREDENTIALS in their environment."""
    import socket

    boto3 = pytest.importorskip("boto3", reason="moto[server] (the test extra) brings boto3")
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
                     aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        server.stop()
