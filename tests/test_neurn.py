"""NeuRN against a direct float64 loop over the paper's equations."""

import numpy as np
import pytest
import torch

from mice2machines.neurn import NeuRN, neurn, pad_widths

NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "zeros": "constant"}


def reference(x: np.ndarray, k: int, max_over: str, padding: str) -> np.ndarray:
    """mu, sigma per k x k window by explicit loops (float64), then sigma / max(sigma)."""
    lo, hi = pad_widths(k)
    b, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (lo, hi), (lo, hi)), mode=NP_MODE[padding])
    sigma = np.zeros((b, c, h, w))
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    patch = xp[n, ch, i : i + k, j : j + k]
                    mu = patch.sum() / k**2
                    sigma[n, ch, i, j] = np.sqrt(((patch - mu) ** 2).sum() / k**2)
    axes = (1, 2, 3) if max_over == "image" else (2, 3)
    smax = sigma.max(axis=axes, keepdims=True)
    return np.divide(sigma, smax, out=np.zeros_like(sigma), where=smax > 0)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("max_over", ["image", "channel"])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular", "zeros"])
def test_matches_loop_float64(k, max_over, padding):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2, 3, 9, 11)) * rng.uniform(0.1, 10, size=(1, 3, 1, 1)) + 5
    if k == 1:  # window of one pixel: sigma is 0 everywhere, output 0
        out = neurn(torch.from_numpy(x), k, max_over, padding).numpy()
        assert np.all(out == 0)
        return
    ref = reference(x, k, max_over, padding)
    out = neurn(torch.from_numpy(x), k, max_over, padding).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
    # borders are included: the same function on every pixel, edge rows too
    np.testing.assert_allclose(out[..., 0, :], ref[..., 0, :], rtol=1e-9, atol=1e-12)
    # the max is exactly 1 in each max group
    axes = (1, 2, 3) if max_over == "image" else (2, 3)
    np.testing.assert_allclose(out.max(axis=axes), 1.0)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular", "zeros"])
def test_numpy_local_std_equals_torch_float64_and_the_loop(k, padding):
    """The torch-free CPU path (summed-area tables) is the same function as the torch one."""
    from mice2machines import neurn_numpy
    from mice2machines.neurn import local_std

    rng = np.random.default_rng(10 + k)
    x = rng.normal(size=(2, 3, 9, 11)) * rng.uniform(0.1, 10, size=(1, 3, 1, 1)) + 5
    ours = neurn_numpy.local_std(x, k, padding)
    assert ours.dtype == np.float64 and ours.shape == x.shape
    torch_std = local_std(torch.from_numpy(x), k, padding).numpy()
    np.testing.assert_allclose(ours, torch_std, rtol=1e-10, atol=1e-12)
    if k > 1:
        for max_over, axes in (("image", (1, 2, 3)), ("channel", (2, 3))):
            np.testing.assert_allclose(
                ours / ours.max(axes, keepdims=True),
                reference(x, k, max_over, padding),
                rtol=1e-9,
                atol=1e-12,
            )
    flat = np.full((1, 2, 7, 9), 0.0 if padding == "zeros" else -1e6)  # zeros pad: 0 is flat
    flat[0, 1] = rng.normal(size=(7, 9))
    out = neurn_numpy.local_std(flat, k, padding)
    assert np.all(out[0, 0] == 0) and np.isfinite(out).all()


def test_numpy_padding_modes_are_the_schemas():
    from mice2machines.neurn_numpy import PAD_MODES
    from mice2machines.neurn_settings import allowed

    assert set(PAD_MODES) == set(allowed("padding")) == set(NP_MODE)


@pytest.mark.parametrize("k", [3, 4])
def test_float32_close_to_loop_on_0_255_images(k):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, 3, 12, 12)).astype(np.float32)
    x[0, :, :6, :6] = 200.0  # a flat region: sigma there must be ~0, not rounding noise
    out = neurn(torch.from_numpy(x), k).numpy()
    ref = reference(x, k, "image", "reflect")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_even_kernel_window_offset():
    """Even k: the window of pixel i covers i - (k/2 - 1) .. i + k/2 (bottom/right bias)."""
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[0, 0, 5, 5] = 1.0  # one bright pixel
    sigma = neurn(x, kernel_size=2, padding="zeros")
    # a 2x2 window at (i, j) covers rows i..i+1, cols j..j+1: it sees (5, 5) for i, j in {4, 5}
    nonzero = torch.nonzero(sigma[0, 0]).tolist()
    assert sorted(nonzero) == [[4, 4], [4, 5], [5, 4], [5, 5]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("value", [0.0, 7.3, 255.0, -1e6])
def test_constant_images_give_zero(dtype, value):
    x = torch.full((2, 3, 7, 9), value, dtype=dtype)
    for max_over in ("image", "channel"):
        out = neurn(x, 5, max_over)
        assert out.dtype == dtype
        assert torch.all(out == 0)
    # one constant channel beside a varying one: no NaN, the constant channel is 0
    y = torch.rand(1, 2, 7, 9, dtype=torch.float64).to(dtype)
    y[:, 0] = value
    out = neurn(y, 3, "channel")
    assert torch.isfinite(out).all()
    assert torch.all(out[:, 0] == 0)


def test_shape_scale_and_shift_invariance():
    x = torch.rand(3, 2, 10, 10, dtype=torch.float64)
    out = neurn(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) == pytest.approx(1.0)
    torch.testing.assert_close(neurn(3.5 * x + 100.0), out)


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("max_over", ["image", "channel"])
def test_gradcheck(k, max_over):
    x = torch.rand(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: neurn(t, k, max_over), (x,))


def test_gradient_finite_on_constant_regions():
    x = torch.rand(1, 1, 12, 12)
    x[..., :6, :] = 0.5
    x.requires_grad_(True)
    neurn(x, 3).square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_bf16_error_against_float32():
    x = torch.rand(2, 3, 32, 32) * 255
    ref = neurn(x)
    out = neurn(x.bfloat16())
    assert out.dtype == torch.bfloat16
    # bf16 input rounding (8 bit mantissa) dominates; the computation itself runs in float32
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 1e-2


def test_module_is_parameter_free_and_configurable():
    m = NeuRN(kernel_size=5, max_over="image", padding="reflect")
    assert list(m.parameters()) == []
    assert m.settings()["kernel_size"] == 5
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(m(x), neurn(x, 5, "image", "reflect"))
    for bad in ({"kernel_size": 0}, {"max_over": "pixel"}, {"padding": "same"}):
        with pytest.raises(ValueError):
            NeuRN(**bad)
    with pytest.raises(ValueError, match="reflect padding"):
        neurn(torch.rand(1, 1, 2, 2), kernel_size=5)
    with pytest.raises(ValueError, match="batch, channel"):
        neurn(torch.rand(3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")
def test_gpu_matches_cpu():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(neurn(x.cuda()).cpu(), neurn(x), atol=1e-5, rtol=1e-4)
