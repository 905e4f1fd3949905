"""Two CPU processes (gloo): sharded data, averaged gradients, identical weights on both ranks, rank-0 writes."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from srpkd.checkpoint import load_tensors
from srpkd.config import load_config
from srpkd.train import dist
from srpkd.train.loop import Trainer
from train_helpers import tiny_teacher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str, teacher: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = load_config("main", [
        "student.ngf=4", "discriminator.ndf=8", "discriminator.n_layers=2", "data.crop_size=32", "data.max_images=8",
        "data.fixed_crops=false", "optim.batch_size=2", "optim.steps=3", "eval_images=2", "log_every=1",
        "loss.srp=100", "loss.feat=1", "name=ddp", f"teacher.checkpoint={teacher}", "threads=1",
        "loss.gan=1",  # the discriminator's weights must agree across ranks too
        "student.derive=none",  # a 6-block teacher (test_distributed_equivalence covers the derived start)
    ])
    trainer = Trainer(cfg, distill=True, run_dir=os.path.join(tmp, "ddp"), quiet=True)
    seen = []
    real = trainer.train_step

    def step(batch, i):
        seen.extend(batch["index"].tolist())
        return real(batch, i)

    trainer.train_step = step
    trainer.run()
    state = {f"G.{k}": v for k, v in trainer.G.state_dict().items()}
    state.update({f"D.{k}": v for k, v in trainer.D.state_dict().items()})
    state.update({f"adapters.{k}": v for k, v in trainer.adapters.state_dict().items()})
    state["seen"] = torch.tensor(seen)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(tmp, f"rank{rank}.safetensors"))
    dist.shutdown()


@pytest.mark.slow
def test_two_processes_hold_identical_weights(tmp_path):
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(teacher)), nprocs=2, join=True)
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    seen0, seen1 = r0.pop("seen"), r1.pop("seen")
    assert len(seen0) == len(seen1) == 6
    assert set(seen0[:2].tolist()).isdisjoint(seen1[:2].tolist())  # ranks take different shards of one order
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # only rank 0 wrote the run folder, and its final checkpoint holds those weights
    last, meta = load_tensors(tmp_path / "ddp" / "checkpoints" / "last.safetensors")
    assert meta["step"] == 3
    for k in r0:
        assert torch.equal(last[k], r0[k]), k
    lines = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert len([line for line in lines if "loss/" in line]) == 3  # one writer, not two
