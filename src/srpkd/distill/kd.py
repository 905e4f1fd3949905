"""The knowledge-distillation terms of one student/teacher pair, built from ``cfg.loss``.

Terms (each off, and not computed, when its weight is 0):

* ``kd``   output KD: L1 between student and teacher images;
* ``srp``  the semantic relation loss on ``srp_taps`` (the paper's term);
* ``feat`` FitNets feature KD: MSE(adapter(F_s), F_t), one learned 1x1 conv
  per tap in ``feat_taps`` (the adapters train with the student's optimizer);
  ``feat_method: factorized`` computes the same loss without the adapted map;
* ``sp``   similarity-preserving KD on ``sp_taps``;
* ``at``   attention transfer on ``at_taps``;
* ``perc`` perceptual KD: ST-LPIPS (the frozen AlexNet of :mod:`srpkd.metrics.perceptual`) between
  student and teacher images, on one random ``perc_crop`` square per batch (the metric is local, and
  a 64 px square costs a quarter of a 128 px image: about 0.11 s a step at batch 4 on one CPU thread);
* ``colour`` colour KD: L1 between the student's and the teacher's images averaged over ``colour_pool``
  px blocks (0: the per-channel means), which weighs a colour cast in full.

Features are requested by tap NAME through ``G(x, taps=[...])`` (see
:mod:`srpkd.models.base`), never by layer index. At construction both
networks are run once on a small input to check that every tap exists in both
and that the spatial sizes agree; a pair that cannot be matched stops with one
:class:`SrpkdError` line naming the tap and both shapes.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import losses as L  # looked up per call: tests replace single losses (monkeypatch)
from ..errors import SrpkdError
from ..metrics.perceptual import stlpips

FEATURE_TERMS = ("srp", "feat", "sp", "at")
TERM_NAMES = {"kd": "output KD", "srp": "relation loss", "feat": "feature KD", "sp": "similarity-preserving KD",
              "at": "attention transfer", "perc": "perceptual KD",
              "colour": "colour KD"}


class TapMismatch(SrpkdError):
    """A requested tap is missing from a network or has incompatible shapes."""


def _probe_size(*models: nn.Module) -> int:
    """The smallest input every model accepts, at least 32 px (a multiple of all size multiples)."""
    m = 1
    for g in models:
        k = int(getattr(g, "size_multiple", 4))
        m = m * k // math.gcd(m, k)
    return m * math.ceil(32 / m)


class KDTerms(nn.Module):
    """Weighted KD terms for one (teacher, student) pair; ``forward`` returns ``{name: weighted loss}``."""

    def __init__(self, loss_cfg, teacher: nn.Module, student: nn.Module, label: str = "") -> None:
        super().__init__()
        self.label = label  # "" or "_B": suffix of the logged loss names
        self.weights = {name: float(getattr(loss_cfg, name)) for name in ("kd",) + FEATURE_TERMS + ("perc", "colour")}
        self.perc_crop = int(loss_cfg.perc_crop)
        self.colour_pool = int(loss_cfg.colour_pool)
        if self.weights["colour"] > 0 and self.colour_pool < 0:
            raise SrpkdError(f"loss.colour_pool is {self.colour_pool}: give a block size in px, or 0 for the "
                             "per-channel means of the whole image")
        if self.weights["perc"] > 0:
            if 0 < self.perc_crop < 32:
                raise SrpkdError(f"loss.perc_crop is {self.perc_crop}: ST-LPIPS needs at least 32 px "
                                 "(0: the whole image)")
            # the frozen ST-LPIPS network, one per device, never in this module's state: loaded now, so that
            # missing weights stop the run before it starts
            stlpips(next(student.parameters()).device)
        self.taps = {name: list(dict.fromkeys(getattr(loss_cfg, f"{name}_taps"))) for name in FEATURE_TERMS}
        self.srp_method = loss_cfg.srp_method
        self.srp_precision = loss_cfg.srp_precision
        self.feat_method = loss_cfg.feat_method
        for name in FEATURE_TERMS:
            if self.weights[name] > 0 and not self.taps[name]:
                raise SrpkdError(f"loss.{name} > 0 but loss.{name}_taps is empty")
        self.adapters = nn.ModuleDict()
        shapes = self._check(teacher, student)
        if self.weights["feat"] > 0:
            for tap in self.taps["feat"]:
                c_t, c_s = shapes[tap][0][1], shapes[tap][1][1]
                self.adapters[tap] = L.FeatureAdapter(c_s, c_t)

    # -- which taps are needed
    def active(self, name: str) -> bool:
        return self.weights[name] > 0

    @property
    def tap_names(self) -> list[str]:
        out: list[str] = []
        for name in FEATURE_TERMS:
            if self.active(name):
                out += self.taps[name]
        return list(dict.fromkeys(out))

    @property
    def relation_norm_taps(self) -> list[str]:
        """Taps whose teacher relation row norms a teacher cache should keep (factorized relation loss only)."""
        return list(self.taps["srp"]) if self.active("srp") and self.srp_method == "factorized" else []

    @property
    def enabled(self) -> bool:
        return any(w > 0 for w in self.weights.values())

    def _check(self, teacher: nn.Module, student: nn.Module) -> dict[str, tuple[tuple, tuple]]:
        taps = self.tap_names
        if not taps:
            return {}
        for who, g in (("teacher", teacher), ("student", student)):
            names = set(getattr(g, "tap_names", ()))
            for tap in taps:
                if tap not in names:
                    arch = getattr(g, "arch", type(g).__name__)
                    raise TapMismatch(
                        f"{who} {arch} has no feature tap {tap!r} (available: {', '.join(getattr(g, 'tap_names', []))})"
                    )
        size = _probe_size(teacher, student)
        x = torch.zeros(1, 3, size, size, device=next(student.parameters()).device)
        was = teacher.training, student.training
        teacher.eval(), student.eval()
        try:
            with torch.no_grad():
                _, ft = teacher(x.to(next(teacher.parameters()).device), taps=taps)
                _, fs = student(x, taps=taps)
        finally:
            teacher.train(was[0]), student.train(was[1])
        shapes = {tap: (tuple(ft[tap].shape), tuple(fs[tap].shape)) for tap in taps}
        for tap, (st, ss) in shapes.items():
            users = [TERM_NAMES[n] for n in FEATURE_TERMS if self.active(n) and tap in self.taps[n]]
            if st[2:] != ss[2:]:
                raise TapMismatch(
                    f"tap {tap!r} cannot be matched for the {', '.join(users)}: teacher "
                    f"{getattr(teacher, 'arch', '?')} gives {st}, student {getattr(student, 'arch', '?')} gives {ss} "
                    f"at {size}x{size} input (spatial sizes must agree)"
                )
        return shapes

    def forward(self, s_out: torch.Tensor, s_feats: dict[str, torch.Tensor], t_out: torch.Tensor,
                t_feats: dict[str, torch.Tensor], t_sq_norms: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """``t_sq_norms``: the teacher's relation row norms by tap, when known (see :mod:`.teacher`)."""
        t_sq_norms = t_sq_norms or {}
        out: dict[str, torch.Tensor] = {}
        sfx = self.label
        if self.active("kd"):
            out["kd" + sfx] = self.weights["kd"] * L.output_kd_loss(s_out, t_out)
        if self.active("srp"):
            terms = [L.semantic_relation_loss(t_feats[t], s_feats[t], method=self.srp_method,
                                              teacher_sq_norms=t_sq_norms.get(t), precision=self.srp_precision)
                     for t in self.taps["srp"]]
            out["srp" + sfx] = self.weights["srp"] * sum(terms) / len(terms)
        if self.active("feat"):
            if self.feat_method == "factorized":
                terms = [L.feature_kd_loss_factorized(s_feats[t], t_feats[t], self.adapters[t].weight,
                                                      self.adapters[t].bias) for t in self.taps["feat"]]
            else:
                terms = [L.feature_kd_loss(self.adapters[t](s_feats[t]), t_feats[t]) for t in self.taps["feat"]]
            out["feat" + sfx] = self.weights["feat"] * sum(terms) / len(terms)
        if self.active("sp"):
            terms = [L.similarity_preserving_loss(t_feats[t], s_feats[t]) for t in self.taps["sp"]]
            out["sp" + sfx] = self.weights["sp"] * sum(terms) / len(terms)
        if self.active("at"):
            terms = [L.attention_transfer_loss(t_feats[t], s_feats[t]) for t in self.taps["at"]]
            out["at" + sfx] = self.weights["at"] * sum(terms) / len(terms)
        if self.active("perc"):
            out["perc" + sfx] = self.weights["perc"] * L.perceptual_kd_loss(s_out, t_out, stlpips(s_out.device),
                                                                            self.perc_crop)
        if self.active("colour"):
            out["colour" + sfx] = self.weights["colour"] * L.colour_kd_loss(s_out, t_out, self.colour_pool)
        return out
