import pytest
import torch
from torch import nn

from amq.config import ProxyConfig
from amq.quant.bank import FULL, ProxyBank
from amq.quant.groupwise import quantize_hqq


def _linears():
    torch.manual_seed(0)
    return {f"l{i}": nn.Linear(128, 64, bias=False) for i in range(3)}


@pytest.mark.parametrize("storage", ["dense", "codes"])
def test_apply_swaps_exact_weights_and_restores(storage):
    lin = _linears()
    orig = {k: v.weight.detach().clone() for k, v in lin.items()}
    bank = ProxyBank(lin, [2, 4], 64, ProxyConfig(storage=storage, iters=5), show_progress=False)
    bank.apply([2, 4, FULL])
    want0 = quantize_hqq(orig["l0"], 2, 64, iters=5).dequantize(torch.float32)
    assert torch.equal(lin["l0"].weight, want0)
    assert torch.equal(lin["l2"].weight, orig["l2"])
    assert not torch.equal(lin["l1"].weight, orig["l1"])
    bank.restore()
    for k in lin:
        assert torch.equal(lin[k].weight, orig[k])


def test_dense_and_codes_storage_agree():
    a, b = _linears(), _linears()
    ba = ProxyBank(a, [3], 64, ProxyConfig(storage="dense", iters=3), show_progress=False)
    bb = ProxyBank(b, [3], 64, ProxyConfig(storage="codes", iters=3), show_progress=False)
    ba.apply([3, 3, 3])
    bb.apply([3, 3, 3])
    for k in a:
        assert torch.equal(a[k].weight, b[k].weight)


def test_unknown_bits_and_wrong_length_are_refused():
    bank = ProxyBank(_linears(), [2, 4], 64, ProxyConfig(name="rtn"), show_progress=False)
    with pytest.raises(ValueError, match="not in the bank"):
        bank.apply([3, 2, 2])
    with pytest.raises(ValueError, match="searchable layers"):
        bank.apply([2, 2])
