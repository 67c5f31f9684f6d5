"""The one device resolver (mldft_app.device): the rule on plain numbers, and torch on this machine."""

import pytest
import torch

from mldft_app.device import device_choice, select_device
from mldft_app.errors import UserInputError
from mldft_app.parallel import Comm

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("local_rank, n_gpus, expected", [
    (0, 0, ("cpu", None)), (5, 0, ("cpu", None)),
    (0, 1, ("cuda", 0)), (3, 1, ("cuda", 0)),
    (0, 4, ("cuda", 0)), (3, 4, ("cuda", 3)), (6, 4, ("cuda", 2)),
])
def test_auto_takes_the_node_local_ranks_gpu_round_robin(local_rank, n_gpus, expected):
    assert device_choice("auto", local_rank, n_gpus) == expected
    if n_gpus:
        assert device_choice("cuda", local_rank, n_gpus) == expected
    assert device_choice("cpu", local_rank, n_gpus) == ("cpu", None)


def test_requests_that_cannot_be_met_name_the_key():
    assert device_choice(" CUDA:1 ", 0, 2) == ("cuda", 1)
    with pytest.raises(UserInputError, match="model.device: unknown device 'tpu'"):
        device_choice("tpu", 0, 2, key="model.device")
    with pytest.raises(UserInputError, match="training.device: device 'cuda' requested but no CUDA device is visible"):
        device_choice("cuda", 0, 0, key="training.device")
    with pytest.raises(UserInputError, match="only 2 CUDA device"):
        device_choice("cuda:2", 0, 2)
    with pytest.raises(UserInputError, match="only 2 CUDA device"):
        device_choice("cuda:x", 0, 2)


def test_select_device_on_this_machine():
    comm = Comm()
    assert select_device("cpu", comm) == torch.device("cpu")
    assert select_device(torch.device("meta"), comm) == torch.device("meta")  # already chosen: unchanged
    if torch.cuda.is_available():
        assert select_device(None, comm) == select_device("auto", comm) == torch.device("cuda", 0)
    else:
        assert select_device(None) == select_device("auto", comm) == torch.device("cpu")
        with pytest.raises(UserInputError, match="no CUDA device is visible \\(torch "):
            select_device("cuda", comm)


@needs_cuda
def test_torch_descriptors_run_on_the_ranks_gpu():
    from ase.build import bulk

    from mldft_app.decomposition import GridLayout
    from mldft_app.descriptors import SnapParams
    from mldft_app.descriptors.torch_backend import RowDescriptors

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    source = RowDescriptors(atoms, GridLayout.create((4, 4, 4), 1, 0), SnapParams(twojmax=2))
    try:
        assert source.grid.device == select_device("auto", Comm()) == torch.device("cuda", 0)
    finally:
        source.close()
