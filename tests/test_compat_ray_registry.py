"""driver_profile "large": during a search, Tune's lookups of the trainable in Ray's registry are read once, not five
times per trial start (compat/ray_internals.trainable_lookups_cached); the registry answers as before, forgets on a
write, and is put back afterwards. The standard profile leaves Ray's registry alone."""
from ray.tune import registry as ray_registry


def count_registry_reads(monkeypatch) -> list:
    """The (method, category, key) of every read that reaches Ray's registry class."""
    reads = []
    cls = type(ray_registry._global_registry)
    for name in ("get", "contains"):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, category, key, _f=original, _n=name:
                            (reads.append((_n, category, key)), _f(self, category, key))[1])
    return reads


def trainable_reads(reads, name):
    return [r for r in reads if r[1] == ray_registry.TRAINABLE_CLASS and r[2] == name]


def test_a_search_reads_its_trainable_from_the_registry_once_not_per_trial(ray_session, tmp_path, monkeypatch):
    from ray import tune

    from compat.ray_internals import trainable_lookups_cached

    def trainable(config):
        tune.report({"score": config["x"]})

    def run(name, fitting):
        tuner = tune.Tuner(trainable, param_space={"x": tune.grid_search([1, 2, 3, 4])},
                           run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0))
        reads = count_registry_reads(monkeypatch)
        results = fitting(tuner)
        monkeypatch.undo()
        return reads, results

    name = "trainable"  # Tune names a function trainable after the function
    reads, _ = run("uncached", lambda t: t.fit())
    assert len(trainable_reads(reads, name)) >= 3 * 4  # Tune's own: five per trial start

    def cached(tuner):
        with trainable_lookups_cached():
            return tuner.fit()

    reads, results = run("cached", cached)
    assert sorted(r.metrics["score"] for r in results) == [1, 2, 3, 4] and not results.errors
    assert sorted(trainable_reads(reads, name)) == [("contains", ray_registry.TRAINABLE_CLASS, name),
                                                    ("get", ray_registry.TRAINABLE_CLASS, name)]  # once per search
    assert "get" not in vars(ray_registry._global_registry)  # put back: Ray's own methods again


def test_the_cached_answers_are_rays_and_a_write_forgets_them(ray_session):
    from compat.ray_internals import trainable_lookups_cached

    def first(config):
        pass

    def second(config):
        pass

    ray_registry.register_trainable("lookup_test", first)
    uncached = ray_registry.get_trainable_cls("lookup_test")
    with trainable_lookups_cached():
        assert ray_registry.get_trainable_cls("lookup_test") is uncached  # the very class Ray returns
        assert ray_registry._has_trainable("lookup_test") and not ray_registry._has_trainable("never_registered")
        ray_registry.register_trainable("lookup_test", second)  # Tune re-registers on restore
        replaced = ray_registry.get_trainable_cls("lookup_test")
        assert replaced is not uncached and replaced._name == ray_registry.get_trainable_cls("lookup_test")._name
    assert ray_registry.get_trainable_cls("lookup_test") is replaced
