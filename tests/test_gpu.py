"""GPU checks (``pytest -m gpu``; skipped without CUDA): the batched network equals the naive per-joint loop on the
device, CPU and CUDA agree in fp32 on values and input gradients, and a training step runs under each precision
mode. Run by `make gpu-check` (bench/gpu_check.py) on a machine with a GPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hipnet.model import precision
from hipnet.model.config import PRESETS
from hipnet.model.hipnet import HIPNet, naive_forward
from hipnet.model.losses import Batch, hipnet_loss
from hipnet.pipeline.core.skeleton import SMPL22

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def inputs(frames: int = 2, points: int = 256):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(frames, points, 3, generator=g) - 0.5
    jt = torch.eye(4).repeat(frames, 22, 1, 1)
    jt[:, :, :3, 3] = torch.randn(frames, 22, 3, generator=g) * 0.3
    return x, jt, torch.arange(frames) % 3


def model(local_frames: bool = False) -> HIPNet:
    torch.manual_seed(0)
    return HIPNet(SMPL22, 3, replace(PRESETS["small"].model, local_frames=local_frames))


@pytest.mark.parametrize("local_frames", [False, True])
def test_batched_equals_naive_on_cuda(local_frames):
    m = model(local_frames).cuda()
    x, jt, s = (t.cuda() for t in inputs())
    with precision.matmul_precision("fp32", "cuda"):
        a, parts_a = m(x, jt, s)[:2]
        b, parts_b = naive_forward(m, x, jt, s)[:2]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts_a, parts_b, rtol=1e-5, atol=1e-5)


def test_cpu_and_cuda_agree_in_fp32_on_values_and_input_gradients():
    m = model(True)
    x, jt, s = inputs()
    out = []
    for device in ("cpu", "cuda"):
        md = m.to(device)
        xd = x.to(device).requires_grad_(True)
        with precision.matmul_precision("fp32", device):
            sdf, _ = md(xd, jt.to(device), s.to(device))
            (grad,) = torch.autograd.grad(sdf.sum(), xd)
        out.append((sdf.detach().cpu(), grad.cpu()))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["fp32", "tf32", "bf16"])
def test_a_training_step_runs_under_each_precision_mode(mode):
    m = model().cuda()
    x, jt, s = inputs()
    n = torch.nn.functional.normalize(x, dim=-1)
    batch = Batch(points=0.4 * n, normals=n, labels=torch.randint(0, 22, x.shape[:2]), eikonal=x,
                  joint_transforms=jt, subject=s).to("cuda")
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    before = [p.detach().clone() for p in m.parameters()]
    with precision.matmul_precision(mode, "cuda"), precision.autocast(mode, "cuda"):
        loss, terms = hipnet_loss(m, batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
