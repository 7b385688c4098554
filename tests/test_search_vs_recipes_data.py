"""The search-vs-recipes benchmark's larger val split: extra val images come only from train images the
train split left out, per class, and train and test stay as they were."""
from pathlib import Path

import pytest

from benchmarks.experiments import search_vs_recipes


def _tree(root: Path, counts: dict[str, int]) -> Path:
    for k, n in counts.items():
        for split, m in (("train", n), ("val", 2)):
            (root / split / k).mkdir(parents=True)
            for i in range(m):
                (root / split / k / f"{split}_{k}_{i}.jpg").write_bytes(b"x")
    (root / "test").mkdir()
    (root / "test" / "t0.jpg").write_bytes(b"x")
    (root / "test_labels.csv").write_text("image_name,label\nt0,a\n")
    return root


def _names(folder: Path) -> set[str]:
    return {f.name for f in folder.iterdir()}


def _check_extra(out, source, subset, expected: dict[str, int]):
    assert _names(out / "train" / "a") == _names(subset / "train" / "a")
    assert (out / "test_labels.csv").read_text() == (source / "test_labels.csv").read_text()
    for k, n in expected.items():
        val = _names(out / "val" / k)
        extra = val - _names(source / "val" / k)
        assert _names(source / "val" / k) <= val  # the original val images are all kept
        assert len(extra) == n
        assert extra <= _names(source / "train" / k) - _names(subset / "train" / k)  # never a training image


def test_extra_val_comes_from_the_train_images_the_subset_left_out(tmp_path):
    source = _tree(tmp_path / "half", {"a": 20, "b": 10})
    subset = search_vs_recipes.stratified_subset(source, 0.3, 0, tmp_path)

    balanced = search_vs_recipes.val_from_train(subset, source, 0, tmp_path, per_class=5)
    _check_extra(balanced, source, subset, {"a": 5, "b": 5})  # the same number of every class
    stratified = search_vs_recipes.val_from_train(subset, source, 0, tmp_path, fraction=0.4)
    _check_extra(stratified, source, subset, {"a": 8, "b": 4})  # the same fraction of every class
    # built once: a second call returns the same folder untouched
    assert search_vs_recipes.val_from_train(subset, source, 0, tmp_path, per_class=5) == balanced


def test_asking_more_extra_val_than_a_class_has_left_stops_with_a_message(tmp_path):
    source = _tree(tmp_path / "half", {"a": 20, "b": 10})
    subset = search_vs_recipes.stratified_subset(source, 0.3, 0, tmp_path)  # b: 3 train, 7 left
    with pytest.raises(SystemExit, match="class b has 7 train images the train split left out, fewer than the 8"):
        search_vs_recipes.val_from_train(subset, source, 0, tmp_path, per_class=8)
    assert not list(tmp_path.glob("*val+8perclass*"))
