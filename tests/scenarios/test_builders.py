import pytest
import torch

from clbench import scenarios
from clbench.scenarios import InputError, permuted, rotated, split
from tests.helpers import synthetic_dataset


def test_split_digits_builds_offline():
    sc = scenarios.build("split-digits", seed=0)
    assert len(sc.tasks) == 5 and sc.tasks[0].classes == [0, 1] and sc.setting == "class-il"
    assert sc.tasks[0].train.x.dtype == torch.uint8
    assert set(sc.tasks[0].train.y.tolist()) == {0, 1}


def test_every_class_in_exactly_one_task():
    sc = scenarios.build("split-digits", seed=3, class_order="seed")
    classes = [c for t in sc.tasks for c in t.classes]
    assert sorted(classes) == list(range(10))
    for t in sc.tasks:
        assert set(t.train.y.tolist()) == set(t.classes) == set(t.test.y.tolist())


def test_same_seed_same_scenario_different_seed_different_order():
    a = scenarios.build("split-digits", seed=1, class_order="seed")
    b = scenarios.build("split-digits", seed=1, class_order="seed")
    c = scenarios.build("split-digits", seed=2, class_order="seed")
    assert a.class_order == b.class_order != c.class_order
    assert torch.equal(a.tasks[2].train.x, b.tasks[2].train.x)
    assert scenarios.build("split-digits", seed=5).class_order == list(range(10))  # fixed by default


def test_explicit_class_order_and_bad_orders():
    data = synthetic_dataset(4)
    sc = split(data, 2, class_order=[3, 2, 1, 0])
    assert sc.tasks[0].classes == [3, 2]
    with pytest.raises(InputError, match="exactly once"):
        split(data, 2, class_order=[0, 0, 1, 2])
    with pytest.raises(InputError, match="cannot split 4 classes into 3"):
        split(data, 3)


def test_task_il_mask_and_domain_il_labels():
    data = synthetic_dataset(4)
    sc = split(data, 2, setting="task-il")
    assert sc.task_mask().tolist() == [[True, True, False, False], [False, False, True, True]]
    dom = split(data, 2, setting="domain-il")
    assert dom.n_classes == 2 and set(dom.tasks[1].train.y.tolist()) == {0, 1}


def test_permutation_is_a_seeded_bijection():
    data = synthetic_dataset(4)
    a = permuted(data, 3, seed=0)
    b = permuted(data, 3, seed=0)
    c = permuted(data, 3, seed=1)
    x0 = data[0].x.flatten(1)
    for t in a.tasks:
        xt = t.train.x.flatten(1)
        # each image holds the same multiset of pixel values: a permutation of positions
        assert torch.equal(xt.sort(1).values, x0.sort(1).values)
    assert torch.equal(a.tasks[1].train.x, b.tasks[1].train.x)
    assert not torch.equal(a.tasks[1].train.x, c.tasks[1].train.x)
    assert not torch.equal(a.tasks[0].train.x, data[0].x)  # every task permuted by default
    ident = permuted(data, 3, seed=0, first_task_identity=True)
    assert torch.equal(ident.tasks[0].train.x, data[0].x)


def test_permutations_are_bijections():
    from clbench.scenarios.builders import pixel_permutations

    p = pixel_permutations(64, 5, seed=0)
    for row in p:
        assert sorted(row.tolist()) == list(range(64))


def test_rotated_and_task_order():
    data = synthetic_dataset(4)
    sc = rotated(data, [0, 90])
    assert torch.equal(sc.tasks[0].train.x, data[0].x)
    assert torch.equal(sc.tasks[1].train.x, torch.rot90(data[0].x, 1, (2, 3)))
    order = split(data, 4, task_order="seed", seed=4)
    assert [t.id for t in order.tasks] == [0, 1, 2, 3]
    assert sorted(t.classes[0] for t in order.tasks) == [0, 1, 2, 3]


def test_registry_errors():
    with pytest.raises(InputError, match="known scenarios"):
        scenarios.build("split-imagenet")
    with pytest.raises(InputError, match="has no option"):
        scenarios.build("split-digits", n_epochs=3)
    names = [r["name"] for r in scenarios.list_scenarios()]
    assert {"split-digits", "split-mnist", "split-fmnist", "permuted-mnist", "rotated-mnist",
            "split-cifar100", "permuted-fmnist"} <= set(names)


def test_scenario_slicing():
    sc = scenarios.build("split-digits")
    assert len(sc[:2].tasks) == 2 and sc[:2].n_classes == 10


def test_train_per_task_keeps_a_seeded_subset_of_each_permuted_task():
    """GEM's protocol: 1,000 random training samples per task (here 7 of 40), a different draw per
    task, the same for the same seed; the test data stays whole."""
    data = synthetic_dataset(4, per_class=10)
    sc = permuted(data, 3, seed=0, train_per_task=7)
    assert [len(t.train) for t in sc.tasks] == [7, 7, 7] and [len(t.test) for t in sc.tasks] == [len(data[1])] * 3
    again = permuted(data, 3, seed=0, train_per_task=7)
    assert all(torch.equal(a.train.x, b.train.x) for a, b in zip(sc.tasks, again.tasks))
    whole = permuted(data, 3, seed=0)
    kept = [{bytes(r) for r in t.train.x.flatten(1).numpy()} for t in sc.tasks]
    assert all(k <= {bytes(r) for r in w.train.x.flatten(1).numpy()} for k, w in zip(kept, whole.tasks))
    assert permuted(data, 3, seed=1, train_per_task=7).tasks[0].train.y.tolist() != sc.tasks[0].train.y.tolist() \
        or not torch.equal(permuted(data, 3, seed=1, train_per_task=7).tasks[0].train.x, sc.tasks[0].train.x)
