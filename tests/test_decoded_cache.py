"""The node's decoded uint8 cache and the pipeline that reads it (loader='cache')."""
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainable import decoded_cache
from trainable.cached_pipeline import RandomResizedCropFlipU8, eval_image_transform, on_device
from core.config import ConfigError, TrialConfig
from core.data import load_rgb
from trainable.decoded_cache import DecodedImages, ensure_decoded
from trainable.transforms import eval_transform

@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))


DATA_CONFIG = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}


def write_images(folder: Path, sizes, seed=0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_images_are_stored_at_the_short_side_with_their_aspect(tmp_path):
    paths = write_images(tmp_path / "img", [(80, 40), (30, 60), (20, 20)])
    decoded = ensure_decoded(paths, short_side=32)
    shapes = {p: tuple(decoded.image(decoded.position(p)).shape) for p in paths}
    assert shapes[paths[0]] == (3, 32, 64)   # landscape: short side 40 -> 32, aspect kept
    assert shapes[paths[1]] == (3, 60, 30)   # short side 30 <= 32: stored as it is, never upscaled
    assert shapes[paths[2]] == (3, 20, 20)
    small = decoded.image(decoded.position(paths[1])).permute(1, 2, 0).numpy()
    assert np.array_equal(small, np.asarray(load_rgb(paths[1])))  # untouched pixels, bit-exact


def test_a_second_call_opens_the_built_cache(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", [(40, 40)] * 3)
    first = ensure_decoded(paths, short_side=32)
    monkeypatch.setattr(decoded_cache, "_build", lambda *a: pytest.fail("rebuilt an existing cache"))
    assert ensure_decoded(list(reversed(paths)), short_side=32).folder == first.folder  # order does not matter


def test_changed_data_or_size_gets_a_new_cache(tmp_path):
    paths = write_images(tmp_path / "img", [(40, 40)] * 3)
    first = ensure_decoded(paths, short_side=32).folder
    assert ensure_decoded(paths, short_side=24).folder != first
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(paths[0])  # same name, new content
    rebuilt = ensure_decoded(paths, short_side=32)
    assert rebuilt.folder != first
    assert tuple(rebuilt.image(rebuilt.position(paths[0])).shape) == (3, 32, 32)
    assert int(rebuilt.image(rebuilt.position(paths[0])).max()) == 0


def test_a_failed_build_leaves_nothing_half_written(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", [(40, 40)] * 4)
    real = decoded_cache._decode
    def fail_on_third(path, side):
        if path.endswith("2.png"):
            raise OSError("disk full")
        return real(path, side)
    monkeypatch.setattr(decoded_cache, "_decode", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        ensure_decoded(paths, short_side=32)
    root = Path(os.environ["RESNET_SEARCH_CACHE"]) / "decoded"
    assert not [p for p in root.iterdir() if p.is_dir()]  # no cache folder, no temp folder
    monkeypatch.setattr(decoded_cache, "_decode", real)
    assert len(ensure_decoded(paths, short_side=32)) == 4


def test_a_full_disk_is_a_clear_message_not_a_traceback(tmp_path, monkeypatch):
    import errno
    from core.data import DataError
    paths = write_images(tmp_path / "img", [(40, 40)] * 2)
    def full(path, side):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(decoded_cache, "_decode", full)
    with pytest.raises(DataError, match="filled up while decoding 2 images at short side 32 .* RESNET_SEARCH_CACHE"):
        ensure_decoded(paths, short_side=32)
    assert not [p for p in (tmp_path / "cache" / "decoded").iterdir() if p.is_dir()]


def test_an_unwritable_cache_folder_is_a_clear_message(tmp_path, monkeypatch):
    from core.data import DataError
    paths = write_images(tmp_path / "img", [(40, 40)])
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(DataError, match=r"cannot write its decoded cache under .*a-file/decoded .*RESNET_SEARCH_CACHE"):
        ensure_decoded(paths, short_side=32)
    assert (tmp_path / "a-file").read_text() == "not a folder"


def _build_concurrently(paths, cache, log_file, start_barrier):
    os.environ["RESNET_SEARCH_CACHE"] = cache
    real = decoded_cache._build
    def logged(*args):
        with open(log_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        real(*args)
    decoded_cache._build = logged
    start_barrier.wait()
    return str(ensure_decoded(paths, short_side=32).folder)


@pytest.mark.slow  # four trial processes, each importing torch: ~30 s, out of the fast tier
def test_concurrent_trials_on_a_node_build_it_once(tmp_path):
    paths = write_images(tmp_path / "img", [(64, 48)] * 40)
    log_file = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        barrier = manager.Barrier(4)
        folders = pool.starmap(_build_concurrently,
                               [(paths, str(tmp_path / "cache"), str(log_file), barrier)] * 4)
    builders = log_file.read_text().split()
    print(f"4 processes started together; builds: {len(builders)} (pid {builders}); all got {folders[0]}")
    assert len(builders) == 1
    assert len(set(folders)) == 1
    built = json.loads((Path(folders[0]) / "build.json").read_text())
    assert built["images"] == 40 and str(built["pid"]) == builders[0]
    assert len(DecodedImages(Path(folders[0]))) == 40


def test_cache_eval_pipeline_matches_the_pil_one(tmp_path):
    paths = write_images(tmp_path / "img", [(48, 40)], seed=3)
    cfg = TrialConfig(eval_size=32, crop_pct=0.875)
    decoded = ensure_decoded(paths, short_side=cfg.required_cache_side)
    batch = eval_image_transform(cfg, DATA_CONFIG)(decoded.image(0))[None]
    assert batch.dtype == torch.uint8  # the workers hand over uint8; float starts on the device
    [(from_cache, _)] = list(on_device([(batch, torch.tensor([0]))], DATA_CONFIG, torch.device("cpu")))
    from_pil = eval_transform(cfg, DATA_CONFIG)(load_rgb(paths[0]))[None]
    assert from_cache.shape == from_pil.shape == (1, 3, 32, 32)
    # Two bicubic resizes (PIL's and torch's) of random noise: close, not bit-equal.
    assert (from_cache - from_pil).abs().mean() < 0.15


def test_train_crop_flips_and_keeps_the_whole_image_at_scale_one():
    square = torch.arange(2 * 2 * 3, dtype=torch.uint8).view(3, 2, 2)
    # scale (1, 1) on a square image: the crop is the whole image, and size 2 -> no resampling.
    assert torch.equal(RandomResizedCropFlipU8(2, (1.0, 1.0), "bilinear", hflip=1.0, vflip=0.0)(square), square.flip(-1))
    assert torch.equal(RandomResizedCropFlipU8(2, (1.0, 1.0), "bilinear", hflip=0.0, vflip=1.0)(square), square.flip(-2))
    assert torch.equal(RandomResizedCropFlipU8(2, (1.0, 1.0), "bilinear", hflip=0.0, vflip=0.0)(square), square)


def test_cache_side_smaller_than_the_sizes_need_is_refused():
    with pytest.raises(ConfigError, match="cache_short_side is 100, but .* need at least 256"):
        TrialConfig(cache_short_side=100, eval_size=224, crop_pct=0.875)
    assert TrialConfig(cache_short_side=0).required_cache_side == 256
