"""The search-vs-recipes benchmark's larger val split: extra val images come only from train images the
train split left out, per class, and train and test stay as they were."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "search_vs_recipes", Path(__file__).resolve().parents[1] / "benchmarks" / "search_vs_recipes.py")
search_vs_recipes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_vs_recipes)


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


def test_extra_val_comes_from_the_train_images_the_subset_left_out(tmp_path):
    source = _tree(tmp_path / "half", {"a": 20, "b": 10})
    subset = search_vs_recipes.stratified_subset(source, 0.3, 0, tmp_path)
    out = search_vs_recipes.val_from_train(subset, source, 0.4, 0, tmp_path)

    assert _names(out / "train" / "a") == _names(subset / "train" / "a")
    assert (out / "test_labels.csv").read_text() == (source / "test_labels.csv").read_text()
    for k, n in (("a", 20), ("b", 10)):
        val = _names(out / "val" / k)
        extra = val - _names(source / "val" / k)
        assert _names(source / "val" / k) <= val  # the original val images are all kept
        assert len(extra) == round(n * 0.4)  # stratified: the same fraction of every class
        assert extra <= _names(source / "train" / k) - _names(subset / "train" / k)
    # built once: a second call returns the same folder untouched
    assert search_vs_recipes.val_from_train(subset, source, 0.4, 0, tmp_path) == out
