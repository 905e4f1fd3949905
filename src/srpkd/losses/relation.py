"""The semantic relation loss of SRP-KD (Li, Jiang, Aarabi, ECCV 2020).

For one image with features F (C x H x W) let Q = F reshaped to (HW x C), so
row q_i is the activation pattern of pixel i. The relation matrix is

    A = Q Q^T                        (HW x HW, A_ij = q_i . q_j)
    R_i = A_i / r_i,  r_i = sqrt(||A_i||^2 + eps)

and the loss between teacher and student is

    L = ||R_t - R_s||_F^2 / (HW)^2,  averaged over the batch.

Dead pixels (an all-zero q_i, common after a ReLU) have A_i = 0; with ``eps``
inside the square root their row R_i is exactly 0 and every gradient stays
finite (for a pixel dead in one map only, the gradient on it is of order
1 / sqrt(eps); a ReLU in front of the features passes none of it back).
For a live row the eps changes R_i by a relative eps / (2 ||A_i||^2).
Both methods below use this one definition, so they agree to rounding error.

``method="dense"`` builds the HW x HW matrices: O((HW)^2 C) time and
O((HW)^2) memory, the reference. ``method="factorized"`` (default) never forms
them. Expanding the square row by row (N = HW),

    ||R_t,i - R_s,i||^2 = n_t,i + n_s,i - 2 c_i
    n_i = s_i / (s_i + eps)                 (1 for a live row, 0 for a dead one)
    s_i = ||A_i||^2 = q_i^T M q_i,          M = Q^T Q          (C x C)
    c_i = u_i / (r_t,i r_s,i),  u_i = q_t,i^T P q_s,i,  P = Q_t^T Q_s  (C_t x C_s)

so only C x C matrices and per-pixel scalars are needed: O(N (C_t + C_s)^2)
time. The gradient has the same shape (its derivation is in
:class:`_FactorizedRelation`), and both passes walk over the pixels in chunks,
so the extra memory is O(C^2 + N) plus about 1 MiB per chunk buffer, whatever N.

Near convergence c_i is close to n_i and the subtraction cancels, so both
methods compute in float64 by default, whatever the input dtype (autocast
off), and cast the result back (see :func:`result_dtype`). ``precision="float32"``
computes the same in float32, about 3x faster on a CPU: on the main job's
encoder features the loss agrees to 1e-6 relative at typical values and to
2e-4 relative near convergence (loss ~5e-8), gradients to 1e-7; closer still (loss ~1e-11) the cancellation
leaves it no digits, which is why float64 is the default (BENCHMARKS.md
section 2; ``tests/test_losses.py``).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..errors import SrpkdError

METHODS = ("factorized", "dense")
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
CHUNK_ELEMENTS = 1 << 17  # float64 elements per (batch, channels, pixels) chunk buffer: 1 MiB


def result_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype a loss returns: the promoted input dtype, but at least float32.

    Like torch's own losses under autocast, a half or bfloat16 input gives a
    float32 loss, so a small loss is not rounded to 8 bits of mantissa.
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.promote_types(dtype, torch.float32)


def _check_pair(f_teacher: torch.Tensor, f_student: torch.Tensor, what: str) -> None:
    t, s = tuple(f_teacher.shape), tuple(f_student.shape)
    if f_teacher.dim() != 4 or f_student.dim() != 4 or t[0] != s[0] or t[2:] != s[2:]:
        raise SrpkdError(
            f"{what}: teacher features {t} and student features {s} must both be "
            f"(batch, channels, height, width) with the same batch, height and width"
        )


def _chunks(xt: torch.Tensor, xs: torch.Tensor, dtype: torch.dtype = torch.float64):
    """Yield (slice, teacher chunk, student chunk) over the pixels, as ``dtype`` (B, C, k)."""
    b, n = xt.shape[0], xt.shape[-1]
    k = max(1, CHUNK_ELEMENTS // (b * max(xt.shape[1], xs.shape[1])))
    for i in range(0, n, k):
        sl = slice(i, min(i + k, n))
        yield sl, xt[..., sl].to(dtype), xs[..., sl].to(dtype)


def _quad(m: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel bilinear form y_i^T m x_i for x (B, C1, k), y (B, C2, k), m (B, C2, C1) -> (B, k)."""
    return (m @ x).mul_(y).sum(1)


class _FactorizedRelation(torch.autograd.Function):
    """Per-image N^2 L = sum_i (n_t,i + n_s,i - 2 c_i) from x = Q^T of shape (B, C, N); returns (B,) in ``dtype``.

    Gradient, with g_i = dL/ds_i = eps / r_i^4 + c_i / r_i^2 (per map),
    h_i = dL/du_i = -2 / (r_t,i r_s,i), G = X diag(g) X^T and
    H = X_t diag(h) X_s^T (all C x C):

        dL/dq_t,i = 2 g_t,i M_t q_t,i + 2 G_t q_t,i + h_i P q_s,i + H q_s,i
        dL/dq_s,i = 2 g_s,i M_s q_s,i + 2 G_s q_s,i + h_i P^T q_t,i + H^T q_t,i

    (s_i = q_i^T M q_i also depends on every q_j through M, which gives the
    G terms; u_i depends on every pixel through P, which gives the H terms.)
    """

    @staticmethod
    def forward(
        ctx, xt: torch.Tensor, xs: torch.Tensor, eps: float, st_given: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> torch.Tensor:
        b, ct, n = xt.shape
        cs = xs.shape[1]
        f64 = dict(dtype=dtype, device=xt.device)
        have_st = st_given is not None  # the teacher's s_t, precomputed (then M_t is not needed: no teacher gradient)
        mt = None if have_st else torch.zeros(b, ct, ct, **f64)
        ms, p = (torch.zeros(b, *shape, **f64) for shape in ((cs, cs), (ct, cs)))
        for _, t, s in _chunks(xt, xs, dtype):
            if not have_st:
                mt.baddbmm_(t, t.mT)
            ms.baddbmm_(s, s.mT)
            p.baddbmm_(t, s.mT)
        st = st_given.to(**f64) if have_st else torch.empty(b, n, **f64)
        ss, u = (torch.empty(b, n, **f64) for _ in range(2))
        for sl, t, s in _chunks(xt, xs, dtype):
            if not have_st:
                st[:, sl] = _quad(mt, t, t)
            ss[:, sl] = _quad(ms, s, s)
            u[:, sl] = _quad(p.mT, t, s)
        rt2, rs2 = st + eps, ss + eps  # r^2
        c = u / (rt2 * rs2).sqrt()
        ctx.save_for_backward(xt, xs, mt, ms, p, rt2, rs2, c)
        ctx.eps = eps
        return (st / rt2 + ss / rs2 - 2.0 * c).sum(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        xt, xs, mt, ms, p, rt2, rs2, c = ctx.saved_tensors
        need_t, need_s = ctx.needs_input_grad[:2]
        w = grad.to(p.dtype)[:, None]  # upstream gradient per image
        h = -2.0 * w / (rt2 * rs2).sqrt()
        gt = w * (ctx.eps / rt2.square() + c / rt2)
        gs = w * (ctx.eps / rs2.square() + c / rs2)
        b, ct, cs = p.shape
        f64 = dict(dtype=p.dtype, device=p.device)
        hh, g_t, g_s = torch.zeros(b, ct, cs, **f64), torch.zeros(b, ct, ct, **f64), torch.zeros(b, cs, cs, **f64)
        for sl, t, s in _chunks(xt, xs, p.dtype):
            hh.baddbmm_(t * h[:, None, sl], s.mT)
            if need_t:
                g_t.baddbmm_(t * gt[:, None, sl], t.mT)
            if need_s:
                g_s.baddbmm_(s * gs[:, None, sl], s.mT)
        dxt = torch.empty_like(xt) if need_t else None
        dxs = torch.empty_like(xs) if need_s else None
        for sl, t, s in _chunks(xt, xs, p.dtype):
            if need_t:
                d = (mt @ t).mul_(2 * gt[:, None, sl]).baddbmm_(g_t, t, alpha=2)
                dxt[..., sl] = d.add_((p @ s).mul_(h[:, None, sl])).baddbmm_(hh, s)
            if need_s:
                d = (ms @ s).mul_(2 * gs[:, None, sl]).baddbmm_(g_s, s, alpha=2)
                dxs[..., sl] = d.add_((p.mT @ t).mul_(h[:, None, sl])).baddbmm_(hh.mT, t)
        return dxt, dxs, None, None, None


def _relation_dense(xt: torch.Tensor, xs: torch.Tensor, eps: float, dtype: torch.dtype = torch.float64
                    ) -> torch.Tensor:
    """Per-image N^2 L through the N x N matrices, from x = Q^T of shape (B, C, N); returns (B,) in ``dtype``."""

    def relation(x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype)
        a = x.mT @ x  # (B, N, N)
        return a / (a.square().sum(-1, keepdim=True) + eps).sqrt()

    return (relation(xt) - relation(xs)).square().sum((1, 2))


def semantic_relation_loss(
    f_teacher: torch.Tensor,
    f_student: torch.Tensor,
    method: str = "factorized",
    eps: float = 1e-8,
    teacher_sq_norms: torch.Tensor | None = None,
    precision: str = "float64",
) -> torch.Tensor:
    """L_SRP = mean over the batch of ||R_t - R_s||_F^2 / (HW)^2 (see the module docstring).

    ``f_teacher`` is (B, C_t, H, W) and ``f_student`` is (B, C_s, H, W); the
    channel counts may differ. Gradients flow to both unless a caller detaches
    the teacher. Returns a scalar in :func:`result_dtype` of the inputs.

    ``teacher_sq_norms``: optionally :func:`relation_sq_norms` of ``f_teacher``,
    computed beforehand (the teacher cache stores them). The factorized method
    then skips the teacher's C_t x C_t Gram matrix and its per-pixel quadratic
    form, the larger part of its cost when C_t > C_s; the result is the same.
    Ignored by the dense method and when ``f_teacher`` requires grad.

    ``precision``: ``float64`` (default) or ``float32``, the dtype the loss is computed in.
    """
    if method not in METHODS:
        raise SrpkdError(f"unknown relation loss method {method!r}; choose one of: {', '.join(METHODS)}")
    if precision not in PRECISIONS:
        raise SrpkdError(f"unknown relation loss precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    _check_pair(f_teacher, f_student, "semantic_relation_loss")
    out_dtype = result_dtype(f_teacher, f_student)
    xt, xs = f_teacher.flatten(2), f_student.flatten(2)
    if teacher_sq_norms is not None:
        if tuple(teacher_sq_norms.shape) != (xt.shape[0], xt.shape[2]):
            raise SrpkdError(f"semantic_relation_loss: teacher_sq_norms {tuple(teacher_sq_norms.shape)} must be "
                             f"(batch, height * width) = {(xt.shape[0], xt.shape[2])}")
        if method != "factorized" or f_teacher.requires_grad:
            teacher_sq_norms = None
    with torch.autocast(device_type=xs.device.type, enabled=False):
        if method == "factorized":
            per_image = _FactorizedRelation.apply(xt, xs, float(eps), teacher_sq_norms, dtype)
        else:
            per_image = _relation_dense(xt, xs, eps, dtype)
    return (per_image.mean() / xs.shape[-1] ** 2).to(out_dtype)


@torch.no_grad()
def relation_sq_norms(features: torch.Tensor) -> torch.Tensor:
    """The squared row norms s_i = ||A_i||^2 = q_i^T M q_i of one feature map's relation matrix, per image.

    ``features`` is (B, C, H, W); returns (B, H * W) float64 (eps not included),
    computed exactly as the factorized loss computes the teacher's, so that it
    can be passed back as ``teacher_sq_norms`` for fixed teacher features.
    """
    x = features.flatten(2)
    with torch.autocast(device_type=x.device.type, enabled=False):
        b, c, n = x.shape
        m = torch.zeros(b, c, c, dtype=torch.float64, device=x.device)
        for _, t, _ in _chunks(x, x[:, :1]):
            m.baddbmm_(t, t.mT)
        out = torch.empty(b, n, dtype=torch.float64, device=x.device)
        for sl, t, _ in _chunks(x, x[:, :1]):
            out[:, sl] = _quad(m, t, t)
    return out
