"""A student started from its teacher (``student.derive: ls``): kept channels, weights refitted by least squares.

For a ResNet student of a wider ResNet teacher (the same number of blocks), as channel-pruning work does
(He, Zhang & Sun, ICCV 2017; ThiNet, Luo et al. 2017), one layer after another in forward order:

1. **Which channels stay.** At every layer the student keeps as many of the teacher's output channels as
   it has, those with the most activation energy (the mean square of what the next layer reads) on a few
   training images. The residual stream keeps one set through all the blocks: the channels with the
   most energy summed over the stream's ten states (after ``down2`` and after each block).
2. **Their weights, refitted.** Each student convolution gets the weights that best map the student's
   OWN input (the activations of the layers already refitted, so that their errors do not add up) to
   the teacher's output of that layer on the kept channels, by ridge-regularised least squares over
   up to ``POSITIONS`` positions of each image: ``W = argmin ||unfold(a_s) W - y_t||^2 + lambda ||W||^2``. A
   transposed convolution is refitted as the convolution it equals on the zero-interleaved input.
   The head is refitted to the teacher's image before its tanh, on all three channels; a
   ``skip_resnet`` head also on the input image it sees.
3. **Norms.** Affine instance norms take the teacher's scale and shift of the kept channels; without
   affine parameters (the students' ``instance``) the next layer's refit absorbs the scale.

The normal equations are summed image by image (float32 products, float64 sums), so they need one image's
unfolded input at a time. The teacher's activations on all the images are held, though: about 65 MB per
128 px image for an ngf 64 ResNet-9 teacher (its conv outputs, what the next layers read, the residual
stream; 2.1 GB for the default 32 images, 4x that at 256 px, where ``student.derive_images`` is the knob).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SrpkdError
from ..metrics.image import psnr
from ..models.resnet import ResnetGenerator

RIDGE = 1e-4  # lambda, relative to the mean diagonal of the normal matrix
POSITIONS = 1024  # positions per image in each fit, drawn at random beyond that (the head's 128 px has 16384)


def check_derivable(teacher: nn.Module, student: nn.Module) -> None:
    """Stop with one line unless ``student`` can be derived from ``teacher`` (ResNets, same blocks, not wider)."""
    other = "; student.derive none starts the student from random weights instead"
    for who, g in (("teacher", teacher), ("student", student)):
        if not isinstance(g, ResnetGenerator) or any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in g.modules()):
            raise SrpkdError(f"student.derive ls: the {who} must be a plain or skip ResNet generator, not "
                             f"{getattr(g, 'arch', type(g).__name__)}{other}")
    if teacher.input_skip:
        raise SrpkdError(f"student.derive ls: the teacher must not have an input skip{other}")
    if len(teacher.blocks) != len(student.blocks):
        raise SrpkdError(f"student.derive ls: the teacher has {len(teacher.blocks)} residual blocks, the student "
                         f"{len(student.blocks)}; they must agree{other}")
    wt, ws = teacher.stem[1].out_channels, student.stem[1].out_channels
    if ws > wt:
        raise SrpkdError(f"student.derive ls: the student (ngf {ws}) is wider than its teacher (ngf {wt}){other}")


def _top(energy: torch.Tensor, k: int) -> torch.Tensor:
    return energy.topk(k).indices.sort().values


def _energy(a: torch.Tensor) -> torch.Tensor:
    return a.double().square().mean((0, 2, 3))


def _as_conv_input(conv: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The input and the (stride, padding) of the ordinary convolution that ``conv`` computes on ``a``."""
    if isinstance(conv, nn.ConvTranspose2d):
        s, p, op, k = conv.stride[0], conv.padding[0], conv.output_padding[0], conv.kernel_size[0]
        n, c, h, w = a.shape
        z = a.new_zeros(n, c, (h - 1) * s + 1, (w - 1) * s + 1)
        z[..., ::s, ::s] = a
        lo, hi = k - 1 - p, k - 1 - p + op
        return F.pad(z, (lo, hi, lo, hi)), {"stride": 1, "padding": 0}
    return a, {"stride": conv.stride[0], "padding": conv.padding[0]}


def _fit(conv: nn.Module, a_s: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
    """Ridge least squares for the weights (and bias) of the convolution ``conv``-shaped from ``a_s`` to ``y_t``;
    returns them as one (out, in * k * k [+ 1]) matrix."""
    k = conv.kernel_size[0]
    x, geo = _as_conv_input(conv, a_s)
    bias = conv.bias is not None
    d = x.shape[1] * k * k + bias
    gram = torch.zeros(d, d, dtype=torch.float64, device=a_s.device)
    cross = torch.zeros(d, y_t.shape[1], dtype=torch.float64, device=a_s.device)
    pick = torch.Generator().manual_seed(0)
    for i in range(len(x)):
        cols = F.unfold(x[i:i + 1].float(), k, stride=geo["stride"], padding=geo["padding"])[0].T  # (P, C k k)
        y = y_t[i].float().flatten(1).T  # (P, out)
        if len(cols) != len(y):
            raise SrpkdError("internal: student.derive: the refitted layer's positions do not match the teacher's")
        if len(cols) > POSITIONS:
            rows = torch.randperm(len(cols), generator=pick)[:POSITIONS].to(cols.device)
            cols, y = cols[rows], y[rows]
        if bias:
            cols = torch.cat([cols, cols.new_ones(len(cols), 1)], 1)
        gram += (cols.T @ cols).double()  # float32 products, float64 sums over the images
        cross += (cols.T @ y).double()
    lam = RIDGE * float(gram.diagonal().mean()) + 1e-12
    return torch.linalg.solve(gram + lam * torch.eye(d, dtype=torch.float64, device=a_s.device), cross).T


@torch.no_grad()
def _set(conv: nn.Module, w: torch.Tensor) -> None:
    k = conv.kernel_size[0]
    bias = conv.bias is not None
    weight = w[:, :-1] if bias else w
    if isinstance(conv, nn.ConvTranspose2d):  # (out, in, k, k) of the equal convolution, flipped and transposed
        weight = weight.reshape(conv.out_channels, conv.in_channels, k, k).flip(2, 3).transpose(0, 1)
    conv.weight.copy_(weight.reshape(conv.weight.shape).to(conv.weight.dtype))
    if bias:
        conv.bias.copy_(w[:, -1].to(conv.bias.dtype))


@torch.no_grad()
def _norm(t_norm: nn.Module, s_norm: nn.Module, keep: torch.Tensor) -> None:
    if getattr(s_norm, "weight", None) is not None and getattr(t_norm, "weight", None) is not None:
        s_norm.weight.copy_(t_norm.weight[keep])
        s_norm.bias.copy_(t_norm.bias[keep])


@torch.no_grad()
def derive_student(teacher: ResnetGenerator, student: ResnetGenerator, images: torch.Tensor) -> dict[str, float]:
    """Set ``student``'s weights from ``teacher`` on ``images`` (N, 3, H, W) in [-1, 1] (see the module's text);
    returns the PSNR (dB) to the teacher on ``images`` of the student before and after."""
    check_derivable(teacher, student)
    was = teacher.training, student.training
    teacher.eval(), student.eval()
    dtype = next(student.parameters()).dtype
    x = images.float()

    # the teacher's activations: what each conv writes, and what the next layer reads
    t_y: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: t_y.__setitem__(m, o))
             for m in teacher.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    reads, h = {}, x
    for name in ("stem", "down1", "down2"):
        h = reads[name] = getattr(teacher, name)(h)
    stream = [h]  # the residual stream: after down2 and after each block
    for i, b in enumerate(teacher.blocks):
        # what the block's second conv reads: the output of its first ReLU (pad, conv, norm, relu, ...)
        hk = b.conv_block[3].register_forward_hook(lambda m, i, o, k=f"block{i + 1}": reads.__setitem__(k, o))
        h = b(h)
        hk.remove()
        stream.append(h)
    for name in ("up1", "up2"):
        h = reads[name] = getattr(teacher, name)(h)
    t_out = teacher.head(h)
    for hk in hooks:
        hk.remove()
    before = float(psnr(student(x.to(dtype)).float(), t_out))

    # which channels stay: the most energy in what the next layer reads
    keep = {n: _top(_energy(reads[n]), getattr(student, n)[0 if n != "stem" else 1].out_channels)
            for n in ("stem", "down1", "up1", "up2")}
    keep["stream"] = _top(sum(_energy(a) for a in stream), student.down2[0].out_channels)

    def layer(t_conv: nn.Module, t_norm: nn.Module, s_conv: nn.Module, s_norm: nn.Module, a_s: torch.Tensor,
              out: torch.Tensor) -> None:
        """One conv and its norm: the student's own input ``a_s`` -> the teacher's output on channels ``out``."""
        _set(s_conv, _fit(s_conv, a_s, t_y[t_conv][:, out]))
        _norm(t_norm, s_norm, out)

    def run(mod: nn.Module, a: torch.Tensor) -> torch.Tensor:
        return mod(a.to(dtype)).float()

    a = x
    layer(teacher.stem[1], teacher.stem[2], student.stem[1], student.stem[2], student.stem[0](a), keep["stem"])
    a = run(student.stem, a)
    for name, out in (("down1", keep["down1"]), ("down2", keep["stream"])):
        t, s = getattr(teacher, name), getattr(student, name)
        layer(t[0], t[1], s[0], s[1], a, out)
        a = run(s, a)
    for i, (tb, sb) in enumerate(zip(teacher.blocks, student.blocks)):
        # [pad, conv, norm, relu, (dropout), pad, conv, norm]: the first conv to the block's kept inner channels
        t_l, s_l = list(tb.conv_block), list(sb.conv_block)
        c0, c1 = [j for j, m in enumerate(s_l) if isinstance(m, nn.Conv2d)]
        inner = _top(_energy(reads[f"block{i + 1}"]), s_l[c0].out_channels)
        h = run(nn.Sequential(*s_l[:c0]), a)  # pad
        layer(t_l[c0], t_l[c0 + 1], s_l[c0], s_l[c0 + 1], h, inner)
        h = run(nn.Sequential(*s_l[c0:c1]), h)  # conv, norm, relu, (dropout), pad
        layer(t_l[c1], t_l[c1 + 1], s_l[c1], s_l[c1 + 1], h, keep["stream"])
        a = a + run(nn.Sequential(*s_l[c1:]), h)  # conv, norm
    for name in ("up1", "up2"):
        t, s = getattr(teacher, name), getattr(student, name)
        layer(t[0], t[1], s[0], s[1], a, keep[name])
        a = run(s, a)
    head_in = torch.cat([a, x], 1) if student.input_skip else a
    _set(student.head[1], _fit(student.head[1], student.head[0](head_in), t_y[teacher.head[1]]))
    after = float(psnr(student(x.to(dtype)).float(), t_out))
    teacher.train(was[0]), student.train(was[1])
    return {"psnr_before": before, "psnr_after": after}
