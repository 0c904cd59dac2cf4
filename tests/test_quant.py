import pytest
import torch

from amq.quant.groupwise import quantize_hqq, quantize_rtn


@pytest.fixture
def weight():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 512, generator=g) * 0.02
    w[3, 7] = 0.4  # an outlier, as real weights have
    return w


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_codes_in_range_and_dequantize_shape(weight, bits):
    q = quantize_rtn(weight, bits, 128)
    assert q.codes.dtype == torch.uint8 and int(q.codes.max()) <= 2**bits - 1
    assert q.scale.shape == (256, 4) and q.scale.dtype == torch.float16
    assert q.dequantize(torch.float32).shape == weight.shape


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_hqq_beats_rtn(weight, bits):
    rtn = (weight - quantize_rtn(weight, bits, 128).dequantize(torch.float32)).abs().mean()
    hqq = (weight - quantize_hqq(weight, bits, 128).dequantize(torch.float32)).abs().mean()
    assert hqq < rtn


def test_error_shrinks_with_bits(weight):
    errs = [(weight - quantize_hqq(weight, b, 128).dequantize(torch.float32)).pow(2).mean() for b in (2, 3, 4)]
    assert errs[0] > errs[1] > errs[2]


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="does not divide"):
        quantize_rtn(torch.zeros(4, 100), 4, 64)
