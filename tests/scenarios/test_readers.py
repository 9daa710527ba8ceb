import gzip

import numpy as np
import pytest

from clbench.scenarios import InputError, load_dataset
from clbench.scenarios.readers import read_idx, write_idx
from clbench.scenarios.sources import load_cifar10, load_cifar100, load_fashion_mnist, load_mnist
from tests.helpers import RunsAShellCommand, make_cifar10, make_cifar100, make_idx_dataset


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    np.testing.assert_array_equal(read_idx(p), a)


def test_mnist_loader_reads_real_idx_layout(tmp_path):
    arrays = make_idx_dataset(tmp_path / "MNIST" / "raw", gz=False)
    train, test, names = load_mnist(root=tmp_path)
    assert train.x.shape == (60, 1, 28, 28) and train.x.dtype.is_floating_point is False
    np.testing.assert_array_equal(train.x[:, 0].numpy(), arrays["train"][0])
    np.testing.assert_array_equal(test.y.numpy(), arrays["t10k"][1])
    assert names == [str(i) for i in range(10)]


def test_fashion_mnist_from_env_variable(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "fm")
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path / "fm"))
    train, test, names = load_fashion_mnist()
    assert len(train) == 60 and len(test) == 30 and names[0] == "T-shirt/top"


def test_wrong_magic_number_is_a_clear_error(tmp_path):
    make_idx_dataset(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(InputError, match="not an IDX file"):
        load_mnist(root=tmp_path)


def test_truncated_idx_is_a_clear_error(tmp_path):
    make_idx_dataset(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        load_mnist(root=tmp_path)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    make_idx_dataset(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(b"")[:5])
    with pytest.raises(InputError, match="cannot read"):
        load_mnist(root=tmp_path)


def test_missing_dataset_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="put the four IDX files"):
        load_mnist(root=tmp_path)
    with pytest.raises(InputError, match="cifar-100-python"):
        load_cifar100(root=tmp_path)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(InputError, match="known datasets: digits, mnist"):
        load_dataset("imagenet")


def test_cifar100_pickles(tmp_path):
    arrays = make_cifar100(tmp_path)
    train, test, names = load_cifar100(root=tmp_path)
    assert train.x.shape == (200, 3, 32, 32) and len(test) == 100 and names[3] == "c3"
    np.testing.assert_array_equal(train.x.reshape(200, -1).numpy(), arrays["train"][0])
    assert train.y.tolist() == arrays["train"][1]


def test_cifar10_pickles_and_the_split_cifar10_scenario(tmp_path):
    """Five training batches concatenated in order; the scenario is 5 tasks of 2 classes; a folder
    without the batches says which files to put where."""
    from clbench import scenarios

    arrays = make_cifar10(tmp_path)
    train, test, names = load_cifar10(root=tmp_path)
    assert train.x.shape == (100, 3, 32, 32) and len(test) == 30 and names[7] == "k7"
    np.testing.assert_array_equal(train.x.reshape(100, -1).numpy(), arrays["train"][0])
    assert train.y.tolist() == arrays["train"][1]
    sc = scenarios.build("split-cifar10", root=tmp_path, val_fraction=0.0)
    assert [t.classes for t in sc.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    with pytest.raises(InputError, match="cifar-10-batches-py/ .files data_batch_1, .*test_batch, batches.meta"):
        load_cifar10(root=tmp_path / "nowhere")


def test_cifar100_pickle_without_keys_is_a_clear_error(tmp_path):
    import pickle

    make_cifar100(tmp_path)
    with open(tmp_path / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(InputError, match="lacks the key"):
        load_cifar100(root=tmp_path)


def test_digits_come_from_scikit_learns_file_without_importing_it():
    """1,797 images, 20% of every class held out for test, the same split every time; and no
    scikit-learn import (a second and more per process, most of a short run's start)."""
    import subprocess
    import sys

    code = ("import sys; from clbench.scenarios.sources import load_digits; tr, te, names = load_digits(); "
            "print(len(tr), len(te), int(tr.x.max()), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1438", "359", "255", "False"]
    from clbench.scenarios.sources import load_digits

    train, test, names = load_digits()
    again = load_digits()[1]
    assert np.array_equal(test.x.numpy(), again.x.numpy()) and names == [str(c) for c in range(10)]
    for c in range(10):
        n_test, n_train = int((test.y == c).sum()), int((train.y == c).sum())
        assert n_test == round(0.2 * (n_test + n_train))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    import pickle

    make_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": RunsAShellCommand(marker)}, f)
    with pytest.raises(InputError, match="refers to posix.system, which the format never holds"):
        load_cifar100(root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickles_of_every_numpy_and_protocol_still_load(tmp_path, protocol):
    """The official files name numpy.core (numpy 1, Python 2); numpy 2 writes numpy._core; Python 3 at
    protocol 2 writes byte strings through _codecs.encode: all of them are data, all load."""
    import pickle

    from clbench.scenarios.readers import read_cifar_pickle

    data = np.arange(12, dtype=np.uint8).reshape(2, 6)
    blob = pickle.dumps({b"data": data, b"fine_labels": [3, 4]}, protocol=protocol)
    variants = [("new", blob)]
    if protocol == 2:  # names as text lines there: numpy 1's spelling, as in the official files
        variants.append(("old", blob.replace(b"numpy._core.", b"numpy.core.")))
    for name, body in variants:
        (tmp_path / name).write_bytes(body)
        got = read_cifar_pickle(tmp_path / name, ("data", "fine_labels"))
        np.testing.assert_array_equal(got["data"], data)
        assert got["fine_labels"] == [3, 4]
