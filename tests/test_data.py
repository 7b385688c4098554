"""core.data: layout discovery, the bad-data policy (message text included), conversions, caches."""
import csv
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core import data
from core.data import DataError, ImageListDataset, index_dataset, load_rgb, resolve_data_root

TINY100 = Path(__file__).resolve().parents[2] / "shared/datasets/tiny100"


# ------------------------------------------------------------------------------------- helpers

def write_image(path: Path, size=(16, 16), color=(120, 60, 30)) -> Path:
    """An RGB PNG, whatever the file name says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def make_dataset(root: Path, counts: dict[str, int], size=(16, 16)) -> Path:
    """counts: {"train/cat": 4, "val/cat": 2, "test": 3} -> that many PNGs per folder, all distinct (copies
    of a file are a data mistake index_dataset looks for)."""
    for folder, n in counts.items():
        tag = zlib.crc32(folder.encode())
        for i in range(n):
            write_image(root / folder / f"img{i:03d}.png", size=size, color=(10 * i % 256, tag & 255, tag >> 8 & 255))
    return root


def half_jpeg(path: Path) -> Path:
    """A real JPEG cut in half: the header is intact, so only a full decode finds the damage."""
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(path, format="JPEG")
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    return path


class Warnings(list):
    def __call__(self, msg: str):
        self.append(msg)

    def about(self, text: str) -> list[str]:
        return [w for w in self if text in w]


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache dir private to one test (the session-wide one from conftest is shared)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(cache))
    return cache


@pytest.fixture
def probes(monkeypatch) -> list[str]:
    """Records every path the scanner fully decodes."""
    calls, real = [], data._probe
    monkeypatch.setattr(data, "_probe", lambda path: calls.append(path) or real(path))
    return calls


# ---------------------------------------------------------------------------------- good layouts

def test_explicit_val_and_test(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 4, "train/dog": 3, "val/cat": 2, "val/dog": 1, "test": 3})
    warns = Warnings()
    index = index_dataset(root, warn=warns)
    assert index.classes == ("cat", "dog")
    assert index.class_counts() == [4, 3]
    assert not index.val_is_holdout
    assert sorted(label for _, label in index.val) == [0, 0, 1]
    assert all(Path(p).is_absolute() and f"/train/{index.classes[label]}/" in p for p, label in index.train)
    assert len(index.test) == 3 and all("/test/" in p for p in index.test)
    assert index.skipped == {} and warns == []


def test_numeric_class_names_sort_numerically(tmp_path):
    root = make_dataset(tmp_path / "d", {f"train/{c}": 2 for c in ("10", "2", "0", "1")})
    assert index_dataset(root, warn=Warnings()).classes == ("0", "1", "2", "10")


def test_mixed_class_names_sort_alphabetically(tmp_path):
    root = make_dataset(tmp_path / "d", {f"train/{c}": 2 for c in ("10", "2", "b", "A")})
    assert index_dataset(root, warn=Warnings()).classes == ("10", "2", "A", "b")


def test_hidden_files_and_folders_are_ignored_silently(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2, "train/.cache": 2, "test": 1})
    (root / "train/cat/.DS_Store").write_bytes(b"\0\1junk")
    (root / "train/.hidden_note").write_text("x")
    write_image(root / "test/.thumb.png")
    warns = Warnings()
    index = index_dataset(root, warn=warns)
    assert index.classes == ("cat", "dog")
    assert len(index.train) + len(index.val) == 4 and len(index.test) == 1
    assert index.skipped == {} and not warns.about("Skipped")


def test_image_list_dataset_labeled_and_unlabeled(tmp_path):
    a = tmp_path / "a.png"
    Image.new("L", (16, 16), 9).save(a)
    dataset = ImageListDataset([(str(a), 3)], transform=lambda im: (im.mode, im.size))
    assert len(dataset) == 1 and dataset[0] == (("RGB", (16, 16)), 3)
    image, label = ImageListDataset([str(a)])[0]
    assert label == -1 and image.mode == "RGB"


# ------------------------------------------------------------------------------------- hold-out

def test_holdout_is_stratified_seeded_and_disjoint(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/a": 20, "train/b": 10, "train/c": 2, "train/d": 1})
    warns = Warnings()
    index = index_dataset(root, val_fraction=0.2, seed=7, warn=warns)
    assert index.val_is_holdout
    val_counts = [sum(1 for _, label in index.val if label == k) for k in range(4)]
    assert val_counts == [4, 2, 1, 0]  # 20% per class, >= 1 where possible, a single image stays in train
    assert index.class_counts() == [16, 8, 1, 1]
    assert not {p for p, _ in index.train} & {p for p, _ in index.val}
    assert index == index_dataset(root, val_fraction=0.2, seed=7, warn=Warnings())
    assert index.val != index_dataset(root, val_fraction=0.2, seed=8, warn=Warnings()).val
    assert warns == ["val has no images for 1 of 4 classes (d); val accuracy does not cover them."]


def test_holdout_with_only_single_image_classes_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/a": 1, "train/b": 1})
    with pytest.raises(DataError, match="hold-out .* is empty: every class has a single usable image"):
        index_dataset(root, warn=Warnings())


def test_val_fraction_out_of_range(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/a": 3})
    with pytest.raises(DataError, match=r"val_fraction is 1.5, but must be in \(0, 1\)"):
        index_dataset(root, val_fraction=1.5)


# ------------------------------------------------------------------------------ layout mistakes

def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    for call in (lambda: resolve_data_root(str(missing)), lambda: index_dataset(missing)):
        with pytest.raises(DataError) as err:
            call()
        assert str(missing) in str(err.value) and "does not exist" in str(err.value)
        assert "DATA/train/<class>/<image>" in str(err.value)


def test_missing_train_folder(tmp_path):
    root = make_dataset(tmp_path / "d", {"val/cat": 2})
    with pytest.raises(DataError) as err:
        index_dataset(root)
    assert f"No train folder {root / 'train'}" in str(err.value)
    assert "DATA/train/<class>/<image>" in str(err.value)


def test_train_without_class_folders(tmp_path):
    (tmp_path / "d/train").mkdir(parents=True)
    with pytest.raises(DataError, match="train has no class folders"):
        index_dataset(tmp_path / "d")


def test_unknown_builtin_lists_known_ones():
    with pytest.raises(DataError) as err:
        resolve_data_root("builtin:digit")
    assert "'builtin:digit'" in str(err.value) and "Known built-ins: builtin:digits" in str(err.value)
    assert "Did you mean: digits?" in str(err.value)


def test_empty_classes_are_all_listed(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2})
    (root / "train/dog").mkdir()
    (root / "train/owl").mkdir()
    (root / "train/owl/broken.png").write_bytes(b"")  # its only file is unusable
    warns = Warnings()
    with pytest.raises(DataError) as err:
        index_dataset(root, warn=warns)
    msg = str(err.value)
    assert f"2 class folder(s) have no usable images: {root / 'train/dog'}, {root / 'train/owl'}" in msg
    assert "listed in the warnings above" in msg
    assert warns.about("unreadable or corrupt") == [
        f"Skipped 1 unreadable or corrupt image(s) under {root} (first: train/owl/broken.png)"]


def test_val_class_unknown_to_train(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2, "val/cat": 1, "val/dgo": 1, "val/emu": 1})
    with pytest.raises(DataError) as err:
        index_dataset(root)
    msg = str(err.value)
    assert f"2 val class folder(s) have no matching train class: {root / 'val/dgo'} (did you mean 'dog'?), " \
           f"{root / 'val/emu'}." in msg
    assert "Known train classes (2): cat, dog." in msg


def test_all_val_images_bad_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2})
    (root / "val/cat").mkdir(parents=True)
    (root / "val/cat/a.jpg").write_text("not really a jpeg")
    warns = Warnings()
    with pytest.raises(DataError, match=f"{root / 'val'} has no usable images .*remove it to hold out"):
        index_dataset(root, warn=warns)
    assert warns.about("Skipped 1 unreadable or corrupt image(s)")


def test_all_test_images_bad_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2, "val/cat": 1})
    (root / "test").mkdir()
    (root / "test/x.png").write_bytes(b"")
    with pytest.raises(DataError, match=f"{root / 'test'} has 1 file\\(s\\) but no usable image"):
        index_dataset(root, warn=Warnings())


def test_files_outside_class_folders_are_skipped_with_a_warning(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2, "val/cat": 1, "test/sub": 1})
    (root / "train/labels.csv").write_text("a,b")
    warns = Warnings()
    index = index_dataset(root, warn=warns)
    assert set(index.skipped["not in a class folder"]) == {str(root / "train/labels.csv"), str(root / "test/sub")}
    assert warns.about("Skipped 2 file(s) not in a class folder") == [
        f"Skipped 2 file(s) not in a class folder (train/ and val/ hold one folder per class; test/ is flat) "
        f"under {root} (first: train/labels.csv, test/sub)"]


# --------------------------------------------------------------------------------- bad files

def test_corrupt_files_are_skipped_with_one_counted_warning(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2, "test": 1})
    (root / "train/cat/zero.jpg").write_bytes(b"")
    half_jpeg(root / "train/cat/half.jpg")
    (root / "train/dog/text.jpg").write_text("hello")  # named like an image, is not one
    good = (root / "train/dog/img000.png").read_bytes()
    (root / "train/dog/cut.png").write_bytes(good[: len(good) - 30])  # truncated PNG
    half_jpeg(root / "test/half.jpg")
    warns = Warnings()
    index = index_dataset(root, warn=warns)
    expected = ["test/half.jpg", "train/cat/half.jpg", "train/cat/zero.jpg", "train/dog/cut.png", "train/dog/text.jpg"]
    assert sorted(os.path.relpath(p, root) for p in index.skipped["unreadable or corrupt"]) == expected
    [msg] = warns.about("Skipped")
    assert msg.startswith(f"Skipped 5 unreadable or corrupt image(s) under {root} (first: ")
    assert all(path in msg for path in expected)
    assert index.class_counts() == [1, 1] and len(index.val) == 2 and len(index.test) == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # detection must not be switched off behind our back


def test_warning_lists_ten_paths_then_a_count(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 3, "train/dog": 2})
    for i in range(13):
        (root / f"train/cat/bad{i:02d}.png").write_bytes(b"")
    warns = Warnings()
    index_dataset(root, warn=warns)
    [msg] = warns
    assert msg.startswith("Skipped 13 unreadable or corrupt image(s)")
    assert "train/cat/bad09.png ... and 3 more)" in msg and "bad10" not in msg


def test_non_image_files_are_skipped_with_a_warning(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2})
    (root / "train/cat/notes.txt").write_text("shot on a phone")
    (root / "train/cat/Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0junk")
    (root / "train/dog/labels.csv").write_text("a,b\n")
    write_image(root / "train/dog/really_a_png.txt")  # decided by opening, not by extension
    warns = Warnings()
    index = index_dataset(root, warn=warns)
    assert warns == [f"Skipped 3 file(s) that are not images under {root} "
                     "(first: train/cat/Thumbs.db, train/cat/notes.txt, train/dog/labels.csv)"]
    assert str(root / "train/dog/really_a_png.txt") in {p for p, _ in index.train + index.val}


def test_tiny_images_are_skipped_and_small_ones_kept(tmp_path):
    root = make_dataset(tmp_path / "d", {"train/cat": 2, "train/dog": 2, "val/cat": 1, "val/dog": 1})
    write_image(root / "train/cat/tiny.png", size=(30, 7))
    write_image(root / "train/cat/small.png", size=(8, 8))  # below any train size, but usable
    warns = Warnings()
    index = index_dataset(root, min_image_side=8, warn=warns)
    assert index.skipped == {"too small": (str(root / "train/cat/tiny.png"),)}
    assert warns == [f"Skipped 1 image(s) too small, shorter side < 8 px under {root} (first: train/cat/tiny.png)"]
    assert str(root / "train/cat/small.png") in dict(index.train)


# --------------------------------------------------------------------------------- conversions

def pixel(path: Path):
    image = load_rgb(str(path))
    assert image.mode == "RGB"
    return image.getpixel((0, 0))


@pytest.mark.parametrize("mode, color, expected", [
    ("RGB", (1, 2, 3), (1, 2, 3)),
    ("L", 77, (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("RGBA", (10, 20, 30, 0), (255, 255, 255)),     # fully transparent -> white
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("RGBA", (0, 0, 0, 128), (127, 127, 127)),      # half black over white
    ("LA", (0, 0), (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
])
def test_load_rgb_modes(tmp_path, mode, color, expected):
    path = tmp_path / "x.tif"  # TIFF keeps CMYK and 1-bit as they are
    Image.new(mode, (4, 4), color).save(path)
    assert Image.open(path).mode == mode
    assert pixel(path) == expected


def test_load_rgb_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = load_rgb(str(tmp_path / "deep.png"))
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255, 4]
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "deep.tif")  # mode "I"
    assert np.asarray(load_rgb(str(tmp_path / "deep.tif")))[0, :, 1].tolist() == [0, 128, 255, 4]


def test_load_rgb_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([200, 0, 0, 0, 90, 0])
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png")
    image.save(tmp_path / "pt.png", transparency=0)
    assert [load_rgb(str(tmp_path / "p.png")).getpixel((x, 0)) for x in (0, 1)] == [(200, 0, 0), (0, 90, 0)]
    assert [load_rgb(str(tmp_path / "pt.png")).getpixel((x, 0)) for x in (0, 1)] == [(255, 255, 255), (0, 90, 0)]


# ---------------------------------------------------------------------------------- scan cache

def test_scan_cache_is_reused_and_invalidated_per_file(tmp_path, own_cache, probes):
    root = make_dataset(tmp_path / "d", {"train/cat": 3, "train/dog": 3, "test": 2})
    first = index_dataset(root, warn=Warnings())
    assert len(probes) == 8
    assert len(list((own_cache / "scans").glob("*.json"))) == 1

    probes.clear()
    assert index_dataset(root, warn=Warnings()) == first
    assert probes == []  # nothing decoded again

    changed = root / "train/cat/img001.png"
    write_image(changed, size=(20, 4))  # now too small: a stale cache entry would keep it
    index = index_dataset(root, warn=Warnings())
    assert probes == [str(changed)]
    assert index.skipped == {"too small": (str(changed),)}

    probes.clear()  # the size threshold applies after the cache: changing it needs no rescan
    assert len(index_dataset(root, min_image_side=2, warn=Warnings()).skipped) == 0
    assert probes == []


def test_corrupt_results_are_rechecked_and_damaged_cache_is_ignored(tmp_path, own_cache, probes):
    root = make_dataset(tmp_path / "d", {"train/cat": 3, "train/dog": 2})
    (root / "train/cat/bad.png").write_bytes(b"")
    index_dataset(root, warn=Warnings())
    probes.clear()
    index_dataset(root, warn=Warnings())
    assert probes == [str(root / "train/cat/bad.png")]  # e.g. fixed permissions leave size and mtime alone

    [cache_file] = (own_cache / "scans").glob("*.json")
    cache_file.write_text("{ half written")
    probes.clear()
    assert len(index_dataset(root, warn=Warnings()).train) == 3
    assert len(probes) == 6


# ------------------------------------------------------------------------------------ builtins

def test_builtin_digits(own_cache, monkeypatch):
    root = resolve_data_root("builtin:digits")
    assert root == own_cache / "datasets" / "digits-v1"
    index = index_dataset(root, warn=Warnings())
    assert index.classes == tuple(str(d) for d in range(10))
    assert not index.val_is_holdout and index.skipped == {}
    assert (len(index.train), len(index.val), len(index.test)) == (1257, 270, 270)
    assert min(index.class_counts()) > 100
    image = Image.open(index.train[0][0])
    assert (image.size, image.mode) == ((32, 32), "RGB")
    with open(root / "test_labels.csv") as f:
        labels = {row["image_name"]: row["label"] for row in csv.DictReader(f)}
    assert set(labels) == {Path(p).stem for p in index.test} and set(labels.values()) == set(index.classes)
    assert all(name.startswith("digit_") for name in labels)

    # Second call reuses the folder; a concurrent builder that finished first wins.
    monkeypatch.setattr(data, "_write_digits", lambda out: pytest.fail("rebuilt"))
    assert resolve_data_root("builtin:digits") == root


def test_builtin_digits_lost_race_uses_the_winners_copy(own_cache, monkeypatch):
    target = own_cache / "datasets" / "digits-v1"

    def other_process_wins(out: Path):
        (out / "partial").write_text("mine")
        (target / "train").mkdir(parents=True)
        (target / "theirs").write_text("complete")

    monkeypatch.setattr(data, "_write_digits", other_process_wins)
    assert resolve_data_root("builtin:digits") == target
    assert (target / "theirs").exists() and not (target / "partial").exists()
    assert [p.name for p in target.parent.iterdir()] == ["digits-v1"]  # our temp dir is gone


# -------------------------------------------------------------------------------------- tiny100

@pytest.mark.skipif(not TINY100.exists(), reason="../shared/datasets/tiny100 is absent (fresh clone)")
def test_tiny100():
    warns = Warnings()
    index = index_dataset(TINY100, warn=warns)
    assert index.classes == tuple(str(k) for k in range(100))
    assert (len(index.val), len(index.test)) == (1000, 3000)
    assert len(index.train) == sum(index.class_counts()) and min(index.class_counts()) >= 40
    assert warns == [] and not index.val_is_holdout
