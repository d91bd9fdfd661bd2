"""Which methods are one configuration: ``mim`` is ``mod`` exactly when the FIM weight is 0, and
no other pair of the registry ever is (their runs would differ in init, schedule or loss)."""

import itertools

from mclnf_dist.meta.methods import (
    METHODS,
    MSE,
    RANDOM,
    InitKey,
    distinct_methods,
    init_key,
    one_configuration,
)


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


def test_one_mapping_from_method_to_init():
    """Which theta_0 each method starts from, in a city (blocks are every method's tasks) and on
    signals (MAML adapts one network to a whole signal): equal keys share one meta-training, and
    the keys' names are the saved assets' (``theta0-mse.pt``, ``theta0-oml-matched.pt``)."""
    city = {n: init_key(METHODS[n], 0.5, blocks_are_tasks=True) for n in METHODS}
    assert city["maml"] == city["mod"] == MSE and city["mim"] == InitKey("fim")
    assert city["oml"].schedule == "sequential" and city["mod"].schedule == "modular"
    assert {city[n] for n in ("random", "finetune", "ewc", "replay", "mod-random")} == {RANDOM}
    signals = {n: init_key(METHODS[n], 0.5, blocks_are_tasks=False) for n in METHODS}
    assert signals["maml"] != signals["mod"] and signals["maml"].schedule == "shared"
    assert str(signals["maml"]) == "mse-shared"
    # the FIM weight 0 is exactly MSE: mim then starts from mod's init
    assert init_key(METHODS["mim"], 0.0, True) == MSE and city["mim"].uses_fim
    matched = {n: init_key(METHODS[n], 0.0, True, param_match=True) for n in METHODS}
    assert str(matched["oml"]) == "oml-matched" and str(matched["random"]) == "random-matched"
    assert matched["mod"] == MSE and not matched["mod-random"].matched  # modules stay as they are
