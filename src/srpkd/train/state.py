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
generators straight out of this file. :func:`save_training_state` writes it
from a task (:mod:`srpkd.train.tasks`) and the loop's progress,
:func:`restore_training_state` puts it back.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import generator_record, load_state_strict, load_tensors, save_tensors
from ..config import Config, to_dict
from ..errors import SrpkdError
from .tasks import Task


def save_training_state(path: Path, task: Task, cfg: Config, distill: bool, *, step: int, epoch: int,
                        scheduler: dict, best: dict | None, elapsed: float) -> None:
    """Write everything a run needs to continue bit for bit (the table above) to ``path``, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, m in task.networks().items():
        tensors.update(prefixed(m, name + "."))
    tensors.update(prefixed(task.adapters, "adapters."))
    opt_meta = {}
    for name, opt in task.optimizers.items():
        t, m = flatten_optimizer(opt, name + ".")
        tensors.update(t)
        opt_meta[name] = m
    pool_tensors, pools_meta = pools_state(task.pools)
    tensors.update(pool_tensors)
    rt, rm = rng_state()
    tensors.update(rt)
    meta = {
        "format": 1, "kind": "training", "step": step, "epoch": epoch,
        "generators": {f"{name}.": generator_record(g) for name, g in task.generators().items()},
        "generator_prefix": "G.", "optimizers": opt_meta, "scheduler": scheduler, "pools": pools_meta, "rng": rm,
        "best": best, "elapsed": elapsed, "task": cfg.task, "distill": distill, "config": to_dict(cfg),
    }
    save_tensors(path, tensors, meta)


def restore_training_state(path: Path, task: Task) -> dict[str, Any]:
    """Load ``path`` into the task's networks, optimisers and pools and into the RNGs; returns the header record."""
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "training":
        raise SrpkdError(f"{path} is not a training checkpoint")
    for name, m in task.networks().items():
        load_state_strict(m, take(tensors, name + "."), f"{path} ({name})")
    if len(task.adapters):
        load_state_strict(task.adapters, take(tensors, "adapters."), f"{path} (adapters)")
    for name, opt in task.optimizers.items():
        unflatten_optimizer(opt, name + ".", tensors, meta["optimizers"][name])
    load_pools(task.pools, tensors, meta.get("pools", {}))
    set_rng_state(tensors, meta.get("rng", {}))
    return meta

def restore_generators(path: Path, task: Task) -> None:
    """Load only the generators of the training checkpoint ``path`` (the best one, as the run's students)."""
    tensors, _ = load_tensors(path)
    for name, G in task.generators().items():
        load_state_strict(G, take(tensors, name + "."), f"{path} ({name})")

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


# ----------------------------------------------------------------------------- image pools


def pools_state(pools: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pool images as ``pool.<name>.images`` (one stacked tensor, or ``.images.<i>`` per image) plus scalars."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for name, pool in pools.items():
        sd = pool.state_dict()
        meta[name] = {k: v for k, v in sd.items() if not isinstance(v, (torch.Tensor, list))}
        images = sd.get("images")
        if isinstance(images, torch.Tensor):
            tensors[f"pool.{name}.images"] = images
        elif isinstance(images, list):
            meta[name]["n_images"] = len(images)
            for i, im in enumerate(images):
                tensors[f"pool.{name}.images.{i}"] = im
    return tensors, meta


def load_pools(pools: dict, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    for name, pool in pools.items():
        pm = dict(meta.get(name, {}))
        if f"pool.{name}.images" in tensors:
            pm["images"] = tensors[f"pool.{name}.images"]
        else:
            pm["images"] = [tensors[f"pool.{name}.images.{i}"] for i in range(pm.pop("n_images", 0))]
        pool.load_state_dict(pm)


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
