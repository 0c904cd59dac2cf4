import pytest
import torch
from torch import nn

from amq.config import ProxyConfig
from amq.quant.bank import FULL, ProxyBank, bank_bytes, bank_device, bank_placement
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


def test_gptq_proxy_matches_gptq_on_the_first_block_and_beats_hqq_on_its_objective(small_model_dir):
    """The gptq proxy quantizes each layer on the full-precision model's inputs: in the first
    block those are the inputs `quantize_model` uses too, so the weights agree exactly; and on
    every layer GPTQ's objective ||X W^T - X Q^T|| is lower than the data-free HQQ proxy's."""
    from transformers import AutoModelForCausalLM

    from amq.config import QuantizerConfig
    from amq.models import searchable_linears
    from amq.quant.apply import BlockHessians, quantize_model

    def model():
        return AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()

    ids = torch.randint(0, 1000, (8, 64), generator=torch.Generator().manual_seed(0))
    m = model()
    lin = searchable_linears(m)
    orig = {n: x.weight.detach().clone() for n, x in lin.items()}
    hess = BlockHessians(m, ids, batch_size=4)
    seen = {}
    bank = ProxyBank(lin, [2, 3], 128, ProxyConfig(name="gptq"), False, lambda n: seen.setdefault(n, hess(n)))
    hqq = ProxyBank(searchable_linears(model()), [2, 3], 128, ProxyConfig(), show_progress=False)

    ref = model()
    plan = {n: 3 for n in lin}
    quantize_model(ref, plan, QuantizerConfig(method="gptq", batch_size=4), ids, show_progress=False, pack_layers=False)
    bank.apply([3] * len(lin))
    first = [n for n in lin if ".layers.0." in n]
    assert first and all(torch.equal(lin[n].weight, searchable_linears(ref)[n].weight) for n in first)

    for n in lin:
        for b in (2, 3):
            h, w0 = seen[n].double(), orig[n].double()
            errs = [
                float(torch.trace((w.double() - w0) @ h @ (w.double() - w0).T)) for w in (bank._weight_for(n, b), hqq._weight_for(n, b))
            ]
            assert errs[0] < errs[1], (n, b, errs)
    with pytest.raises(ValueError, match="block order"):
        hess(first[0])
    with pytest.raises(ValueError, match="Hessians"):
        ProxyBank(lin, [2], 128, ProxyConfig(name="gptq"), show_progress=False)


@pytest.mark.parametrize("storage", ["dense", "codes"])
def test_the_bank_size_is_known_before_it_is_built(storage):
    lin = _linears()
    bank = ProxyBank(lin, [2, 3, 4], 64, ProxyConfig(name="rtn", storage=storage), show_progress=False)
    assert bank_bytes(lin, 3, 64, storage) == bank.nbytes()


GB = 10**9


def test_auto_keeps_the_bank_on_the_gpu_unless_it_would_crowd_it():
    gpu = torch.device("cuda", 0)
    # 13B codes bank (39.3 GB) beside the 26 GB model: fits an H200 (141 GB), not an 80 GB H100
    assert bank_placement(39 * GB, 141 * GB - 26 * GB, 141 * GB, gpu) == gpu
    assert bank_placement(39 * GB, 80 * GB - 26 * GB, 80 * GB, gpu).type == "cpu"
    # 7B (20 GB beside 13.5 GB) fits the H100
    assert bank_placement(20 * GB, 80 * GB - 27 * GB // 2, 80 * GB, gpu) == gpu
    # on the CPU, or when told, nothing is decided
    assert bank_device(ProxyConfig(), torch.device("cpu"), 10**15).type == "cpu"
    assert bank_device(ProxyConfig(bank_device="model"), gpu, 10**15) == gpu
    assert bank_device(ProxyConfig(bank_device="cpu"), gpu, 1).type == "cpu"
