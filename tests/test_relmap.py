"""Relation maps (srpkd relmap, and the report's section): the rows are the relation loss's rows."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from conftest import write_image
from PIL import Image
from test_report import make_run

from srpkd import create_generator, save_generator
from srpkd.cli.main import main
from srpkd.losses.relation import semantic_relation_loss
from srpkd.relmap import (
    feature_index,
    fit_size,
    relation_maps,
    relation_rows,
    render,
)
from srpkd.report import write_report

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rows_are_the_relation_matrix_of_the_loss():
    """With every pixel as a query, the rows give the loss: sum_i ||R_t,i - R_s,i||^2 / (hw)^2."""
    g = torch.Generator().manual_seed(0)
    ft, fs = torch.randn(1, 6, 5, 7, generator=g).relu(), torch.randn(1, 3, 5, 7, generator=g).relu()
    everything = list(range(5 * 7))
    rt, rs = relation_rows(ft[0], everything), relation_rows(fs[0], everything)
    assert rt.shape == (35, 5, 7)
    assert torch.allclose(rt.flatten(1).norm(dim=1), torch.ones(35, dtype=torch.float64))  # unit rows
    by_rows = (rt - rs).square().sum() / 35**2
    assert float(by_rows) == pytest.approx(float(semantic_relation_loss(ft, fs, method="dense")), rel=1e-6)


def test_a_row_lights_up_the_pixels_that_share_the_query_pixels_features():
    """Two regions with orthogonal features: the row of a pixel in one region is zero on the other."""
    f = torch.zeros(2, 4, 6)
    f[0, :, :3] = 1.0  # left half: feature 0
    f[1, :, 3:] = 2.0  # right half: feature 1
    left, right = relation_rows(f, [feature_index((1, 2), (4, 6), (4, 6)), feature_index((5, 0), (4, 6), (4, 6))])
    assert torch.all(left[:, :3] > 0) and torch.all(left[:, 3:] == 0)
    assert torch.all(right[:, 3:] > 0) and torch.all(right[:, :3] == 0)


def test_feature_index_maps_image_pixels_onto_the_feature_grid():
    assert feature_index((0, 0), (128, 96), (32, 24)) == 0
    assert feature_index((95, 127), (128, 96), (32, 24)) == 32 * 24 - 1
    assert feature_index((4, 8), (128, 96), (32, 24)) == 2 * 24 + 1


def test_fit_size_keeps_the_aspect_ratio_on_the_networks_grid():
    assert fit_size(768, 512, 256, 4) == (256, 172)
    assert fit_size(512, 768, 128, 4) == (84, 128)
    assert fit_size(10, 1000, 64, 8) == (8, 64)


def test_identical_networks_have_identical_rows_and_the_picture_renders():
    torch.manual_seed(0)
    g = create_generator("resnet_9blocks", ngf=4)
    image = torch.rand(3, 32, 48) * 2 - 1
    maps = relation_maps(g, g, image, [(0, 0), (47, 31), (20, 10)])
    assert maps.teacher.shape == (3, 8, 12) and torch.equal(maps.teacher, maps.student)
    assert torch.all(maps.distances == 0)
    png = render(maps)
    assert png.startswith(b"\x89PNG")


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(0)
    save_generator(create_generator("resnet_9blocks", ngf=8), tmp_path / "teacher.safetensors")
    save_generator(create_generator("resnet_9blocks", ngf=4), tmp_path / "student.safetensors")
    write_image(tmp_path / "photo.png", 60, 40, seed=3)
    return tmp_path


def test_relmap_command(checkpoints, capsys):
    t = checkpoints
    out = t / "maps" / "r.png"
    rc = main(["relmap", str(t / "student.safetensors"), str(t / "photo.png"),
               "--teacher", str(t / "teacher.safetensors"), "--pixels", "3,4", "59,39", "--size", "48", "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert re.search(r"pixel 3,4: \|\|R_t - R_s\|\|\^2 = \d\.\d{4}", printed) and "pixel 59,39" in printed
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400
    assert not list(out.parent.glob(".*.tmp"))


def test_report_shows_the_relation_maps_of_a_run(tmp_path, aligned_dir):
    run = make_run(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["root"] = str(aligned_dir)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    text = write_report(run).read_text()
    assert "<h2>Relation maps</h2>" in text and 'alt="relation maps of r"' in text
    assert text.count("data:image/png;base64,") == 3  # samples, relation maps, loss curves
    assert "srpkd relmap r IMAGE" in text


def test_report_without_readable_data_says_why_there_are_no_relation_maps(tmp_path):
    text = write_report(make_run(tmp_path)).read_text()  # its data root does not exist
    assert "no relation maps:" in text and "/data/facades" in text


def test_relmap_of_a_run_folder_uses_its_teacher_tap_and_size(tmp_path, aligned_dir, capsys):
    run = make_run(tmp_path)
    write_image(tmp_path / "photo.jpg", 50, 50, seed=1)
    assert main(["relmap", str(run), str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "r.png")]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("pixel ")]) == 3
    with Image.open(tmp_path / "r.png") as img:
        assert np.asarray(img).std() > 0
