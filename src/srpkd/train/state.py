"""The training-state checkpoint: everything a run needs to continue bit for bit.

One safetensors file (``checkpoints/last.safetensors`` and friends), written
atomically with :func:`srpkd.checkpoint.save_tensors`. Tensors are stored under
prefixes, everything else is JSON in the header record:

===============  ===========================================================
tensor prefix    content
===============  ===========================================================
``G.``           the student / trained generator (A->B)
``G_B.``         unpaired, both directions: the B->A generator
``D.``, ``D_B.`` discriminators
``adapters.``    feature-KD 1x1 adapters (trained with the generator)
``optG.``        generator optimizer state: ``optG.state.<param idx>.<key>``
``optD.``        discriminator optimizer state
``pool.<name>.`` image-pool contents
``rng.``         torch CPU (``rng.torch``), CUDA (``rng.cuda.<i>``), numpy
                 (``rng.numpy``) generator states as uint8 / int64 tensors
===============  ===========================================================

Header record (``meta``)::

    {"format": 1, "kind": "training", "step": S, "epoch": E,
     "generators": {"G.": generator_record, "G_B.": ...}, "generator_prefix": "G.",
     "optimizers": {"optG": {"param_groups": [...], "state_scalars": {...}}, ...},
     "scheduler": {...}, "pools": {...}, "rng": {"numpy": [...], "python": [...]},
     "best": {...}, "config": {...resolved config...}}

Nothing is pickled; :func:`srpkd.checkpoint.load_generator` reads the
generators straight out of this file.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..errors import SrpkdError

# ----------------------------------------------------------------------------- optimizers


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}state.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state_scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "state."):
            idx, key = name[len(prefix) + 6 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, kv in meta.get("state_scalars", {}).items():
        state.setdefault(int(idx), {}).update(kv)
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as e:
        raise SrpkdError(f"optimizer state in the checkpoint does not fit this run: {e}") from None


# ----------------------------------------------------------------------------- random number generators


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [py[0], list(py[1]), py[2]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    if "rng.numpy" in tensors and "numpy" in meta:
        kind, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    if "python" in meta:
        v, state, gauss = meta["python"]
        random.setstate((v, tuple(state), gauss))


# ----------------------------------------------------------------------------- modules


def prefixed(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def take(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
