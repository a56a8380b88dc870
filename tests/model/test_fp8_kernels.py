"""The Triton kernels of the FP8 path (model/fp8_kernels.py), run on CPU by Triton's interpreter.

On an H100 the gradient kernel matched its PyTorch twin in 99.9998% of values (presumably exp's last
bits send the rest to a neighbouring e5m2 number); the gradients of the fused and unfused heads agreed
to 1e-5 (benchmarks/fp8_head.py). Here the interpreter checks the indexing: tiles, ragged edges,
the transposed copy, ignored targets. Its float8 conversion does not carry a rounding into the
exponent (a value just under a power of two can come out at half of it), so values are compared
to within that, not bit for bit.
"""

SCRIPT = r"""
import torch
from chatforge.model import fp8_kernels as K
torch.manual_seed(0)
M, V = 100, 300                       # neither a multiple of the 64 x 128 tile
logits = (torch.randn(M, V) * 3).bfloat16()
lse = torch.logsumexp(logits.float(), -1)
t = torch.randint(0, V, (M,))
t[5] = t[70] = -1
coef = torch.tensor([1024 * M / 98.0])
ref, ref_t = K.ce_grad_fp8_reference(logits, lse, t, coef)
out = torch.full((M, V), 7.0).to(K.E5M2)
out_t = torch.full((V, M), 7.0).to(K.E5M2)
K.launch_ce_grad_fp8(logits, lse, t, coef, out, out_t)
o, r = out.float(), ref.float()
assert torch.equal(out_t.float(), o.t()), "transposed copy differs"
assert torch.equal(ref_t.float(), r.t())
assert o[5].abs().max() == 0 and o[70].abs().max() == 0, "ignored rows must be zero"
assert ((o - r).abs() <= 0.5 * r.abs() + 2.0**-16).all(), "beyond the interpreter's rounding"
assert (o == r).float().mean() > 0.9, (o == r).float().mean()
rows = torch.arange(M)[t >= 0]
assert (o[rows, t[rows]] < 0).all(), "the target column carries p - 1 < 0"
print("ok")
"""


def test_ce_grad_kernel_in_the_triton_interpreter(triton_interpreter):
    triton_interpreter(SCRIPT)
