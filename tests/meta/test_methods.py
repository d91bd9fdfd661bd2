"""Which methods are one configuration: ``mim`` is ``mod`` exactly when the FIM weight is 0, and
no other pair of the registry ever is (their runs would differ in init, schedule or loss)."""

import itertools

from mclnf_dist.meta.methods import METHODS, distinct_methods, one_configuration


def test_mim_is_mod_only_at_fim_weight_zero():
    mod, mim = METHODS["mod"], METHODS["mim"]
    assert one_configuration(mod, mim, 0.0) and one_configuration(mim, mod, 0.0)
    assert not one_configuration(mod, mim, 0.5)
    twins = {
        frozenset((a.name, b.name))
        for a, b in itertools.combinations(METHODS.values(), 2)
        if one_configuration(a, b, 0.0)
    }
    assert twins == {frozenset(("mod", "mim"))}


def test_distinct_methods_keeps_the_first_of_each_configuration():
    specs, twins = distinct_methods(["random", "mod", "mim", "mod-random"], 0.0)
    assert [s.name for s in specs] == ["random", "mod", "mod-random"] and twins == {"mim": "mod"}
    specs, twins = distinct_methods(["mim", "mod"], 0.0)
    assert [s.name for s in specs] == ["mim"] and twins == {"mod": "mim"}
    specs, twins = distinct_methods(["mod", "mim"], 0.25)
    assert [s.name for s in specs] == ["mod", "mim"] and twins == {}
