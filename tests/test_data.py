"""Preprocessing, datasets in the pix2pix/CycleGAN layouts, built-in photos, and the real data in ../shared/data."""
import shutil

import numpy as np
import pytest
import torch
from conftest import write_image
from PIL import Image
from torch.utils.data import DataLoader

from srpkd import SrpkdError
from srpkd.data import (
    PREPROCESS,
    AlignedDataset,
    BuiltinPhotos,
    SingleDataset,
    Transform,
    UnalignedDataset,
    build_dataset,
    check_same_size,
    load_image,
    to_tensor,
)
from srpkd.data.builtin import TEST_PHOTOS, TRAIN_PHOTOS, VAL_PHOTOS, load_photo


def pair_image(path, size=32, seed=0, same=True):
    """An aligned A|B file; with ``same`` the two halves are identical."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    b = a if same else 255 - a
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([a, b], 1)).save(path)  # PNG: lossless
    return path


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize(
    "preprocess, size, expected",
    [
        ("resize_and_crop", (50, 30), (24, 24)),
        ("crop", (50, 30), (24, 24)),
        ("scale_width", (50, 30), (40, 24)),  # width to load_size, height at least crop_size
        ("scale_width", (50, 100), (40, 80)),
        ("scale_width_and_crop", (50, 100), (24, 24)),
        ("resize", (50, 30), (24, 24)),
        ("none", (51, 29), (52, 28)),  # rounded to multiples of 4
    ],
)
def test_transform_output_shapes(preprocess, size, expected):
    t = Transform(preprocess, load_size=40, crop_size=24, flip=True)
    img = Image.new("RGB", size, (10, 200, 30))
    (x,) = t(img)
    assert x.shape == (3, expected[1], expected[0])
    assert t.output_size(size) == expected
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1


def test_transform_deterministic_property():
    deterministic = {p for p in PREPROCESS if Transform(p, 40, 24, flip=False).deterministic}
    assert deterministic == {"scale_width", "resize", "none"}
    assert not any(Transform(p, 40, 24, flip=True).deterministic for p in PREPROCESS)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    t = Transform("resize", 40, 24, flip=False)
    assert torch.equal(t(img)[0], t(img)[0])


def test_random_crop_and_flip_are_shared_by_a_pair_and_seeded():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    t = Transform("resize_and_crop", load_size=48, crop_size=32, flip=True)
    outs = []
    for seed in range(12):
        torch.manual_seed(seed)
        a, b = t(img, img.copy())
        assert torch.equal(a, b)  # same crop position and flip for both
        outs.append(a)
    assert len({o.numpy().tobytes() for o in outs}) > 4  # ... and they do vary between samples
    torch.manual_seed(3)
    assert torch.equal(t(img)[0], outs[3])  # the global torch seed controls them
    flipped = Transform("none", flip=True)
    seen = {flipped(img)[0][:, 0, 0].sum().item() for _ in range(30)}
    assert len(seen) == 2  # both orientations occur


def test_transform_errors():
    with pytest.raises(SrpkdError, match="unknown preprocess 'zoom'; choose one of: resize_and_crop"):
        Transform("zoom")
    with pytest.raises(SrpkdError, match="crop_size 300 is larger than load_size 286"):
        Transform("resize_and_crop", 286, 300)
    with pytest.raises(SrpkdError, match=r"small\.png is 20x20 after preprocess 'crop', smaller than crop_size 32"):
        Transform("crop", 286, 32)(Image.new("RGB", (20, 20)), source="small.png")


# ----------------------------------------------------------------------------- aligned


def test_aligned_pairs_direction_and_identical_crops(tmp_path):
    root = tmp_path / "pairs"
    for i in range(3):
        pair_image(root / "train" / f"{i}.png", seed=i)
    ds = AlignedDataset(root, "train", transform=Transform("resize_and_crop", 40, 24, flip=True))
    for seed in range(5):
        torch.manual_seed(seed)
        item = ds[seed % 3]
        assert item["A"].shape == (3, 24, 24) and torch.equal(item["A"], item["B"])
    assert item["A_path"].endswith("train/1.png") and item["B_path"] == item["A_path"]  # index 4 % 3

    different = tmp_path / "diff"
    pair_image(different / "test" / "0.png", same=False)
    ab = AlignedDataset(different, "test")[0]
    ba = AlignedDataset(different, "test", direction="BtoA")[0]
    assert torch.equal(ab["A"], ba["B"]) and torch.equal(ab["B"], ba["A"])
    torch.testing.assert_close(ab["A"], -ab["B"])  # B half was 255 - A
    assert AlignedDataset(different, "test").deterministic


def test_aligned_errors_name_the_folder_or_file(tmp_path, aligned_dir):
    with pytest.raises(SrpkdError, match=f"{aligned_dir} has no 'val' folder .*aligned layout"):
        AlignedDataset(aligned_dir, "val")
    (aligned_dir / "empty").mkdir()
    with pytest.raises(SrpkdError, match=r"no images in .*empty"):
        AlignedDataset(aligned_dir, "empty")
    with pytest.raises(SrpkdError, match="direction must be AtoB or BtoA, got 'AB'"):
        AlignedDataset(aligned_dir, "train", direction="AB")
    # a wrong layout fails at construction, on the first file ...
    write_image(aligned_dir / "square" / "0.jpg", 32, 32)
    with pytest.raises(SrpkdError, match=r"square/0\.jpg is 32x32; an aligned pair must be A\|B side by side"):
        AlignedDataset(aligned_dir, "square")
    # ... and on any later file when it is loaded
    write_image(aligned_dir / "train" / "9.jpg", 60, 32)
    ds = AlignedDataset(aligned_dir, "train")
    with pytest.raises(SrpkdError, match=r"train/9\.jpg is 60x32"):
        ds[len(ds) - 1]
    # an unreadable file is one line naming it
    (aligned_dir / "train" / "5.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SrpkdError, match=r"cannot read image .*train/5\.jpg"):
        AlignedDataset(aligned_dir, "train")[4]


def test_grayscale_and_rgba_become_rgb(tmp_path):
    write_image(tmp_path / "g" / "train" / "0.png", 64, 32, mode="L")
    write_image(tmp_path / "g" / "train" / "1.png", 64, 32, mode="RGBA")
    ds = AlignedDataset(tmp_path / "g", "train")
    assert all(ds[i][k].shape == (3, 32, 32) for i in (0, 1) for k in "AB")
    gray = ds[0]["A"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    single = SingleDataset([tmp_path / "g" / "train" / "1.png"])
    assert single[0]["A"].shape == (3, 32, 64)


# ----------------------------------------------------------------------------- unaligned and single


def test_unaligned_length_pairing_and_direction(unaligned_dir):
    ds = UnalignedDataset(unaligned_dir, "train", serial=True)
    assert len(ds) == 4  # max(4 A, 3 B)
    assert [ds[i]["B_path"].rsplit("/", 1)[1] for i in range(4)] == ["0.png", "1.png", "2.png", "0.png"]
    assert ds[1]["A_path"].endswith("trainA/1.png") and ds[1]["A"].shape == (3, 32, 32)
    assert ds.deterministic
    rnd = UnalignedDataset(unaligned_dir, "train")
    torch.manual_seed(0)
    first = [rnd[0]["B_path"] for _ in range(10)]
    torch.manual_seed(0)
    assert [rnd[0]["B_path"] for _ in range(10)] == first and len(set(first)) > 1
    assert not rnd.deterministic
    swapped = UnalignedDataset(unaligned_dir, "test", direction="BtoA", serial=True)
    assert swapped[0]["A_path"].endswith("testB/0.png") and swapped[0]["B_path"].endswith("testA/0.png")


def test_unaligned_errors(unaligned_dir):
    shutil.rmtree(unaligned_dir / "trainB")
    with pytest.raises(SrpkdError, match=r"has no 'trainB' folder \(CycleGAN layout expected: trainA/ and trainB/"):
        UnalignedDataset(unaligned_dir, "train")
    with pytest.raises(SrpkdError, match=r"has no 'valA' folder"):
        UnalignedDataset(unaligned_dir, "val")
    (unaligned_dir / "trainB").mkdir()
    with pytest.raises(SrpkdError, match=r"no images in .*trainB"):
        UnalignedDataset(unaligned_dir, "train")


def test_single_dataset_inputs(unaligned_dir, tmp_path):
    assert len(SingleDataset(unaligned_dir / "trainA")) == 4
    one = SingleDataset(unaligned_dir / "trainA" / "2.png")
    assert len(one) == 1 and one[0]["A_path"].endswith("2.png") and set(one[0]) == {"A", "A_path"}
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SrpkdError, match=r"notes\.txt is not an image file"):
        SingleDataset(tmp_path / "notes.txt")
    with pytest.raises(SrpkdError, match="folder not found: .*nowhere"):
        SingleDataset(tmp_path / "nowhere")


def test_mixed_sizes_resize_or_refuse(tmp_path):
    folder = tmp_path / "mixed"
    write_image(folder / "a.png", 40, 32)
    write_image(folder / "b.png", 36, 48)
    kept = build_dataset("single", folder, preprocess="none", flip=False)
    with pytest.raises(SrpkdError, match=r"a\.png gives 40x32 but .*b\.png gives 36x48 \(use batch size 1"):
        check_same_size(kept)
    resized = build_dataset("single", folder, load_size=40, crop_size=32, preprocess="resize_and_crop")
    assert check_same_size(resized) == (32, 32)
    batch = next(iter(DataLoader(resized, batch_size=2)))
    assert batch["A"].shape == (2, 3, 32, 32) and len(batch["A_path"]) == 2
    assert check_same_size(BuiltinPhotos("test", crop_size=48)) == (48, 48)


def test_build_dataset_modes_and_errors(aligned_dir, unaligned_dir):
    common = dict(load_size=36, crop_size=32, preprocess="resize_and_crop")
    assert len(build_dataset("aligned", aligned_dir, "test", **common)) == 2
    assert len(build_dataset("aligned", aligned_dir, "train", max_images=3, **common)) == 3
    assert len(build_dataset("unaligned", unaligned_dir, "train", serial=True, **common)) == 4
    assert len(build_dataset("single", unaligned_dir / "testB", **common)) == 2
    assert len(build_dataset("builtin", None, "test", crop_size=32)) == 48
    batch = next(iter(DataLoader(build_dataset("aligned", aligned_dir, "train", **common), batch_size=4)))
    assert batch["A"].shape == batch["B"].shape == (4, 3, 32, 32)
    with pytest.raises(SrpkdError, match="unknown dataset mode 'paired'; choose one of: aligned, unaligned, single"):
        build_dataset("paired", aligned_dir)
    with pytest.raises(SrpkdError, match="dataset mode 'aligned' needs a root folder"):
        build_dataset("aligned", None)
    with pytest.raises(SrpkdError, match="mode 'builtin' takes no root folder"):
        build_dataset("builtin", aligned_dir)
    with pytest.raises(SrpkdError, match="fixed crops are only for the builtin dataset"):
        build_dataset("aligned", aligned_dir, fixed=True)
    with pytest.raises(SrpkdError, match="direction must be AtoB or BtoA"):
        build_dataset("unaligned", unaligned_dir, direction="A2B")
    with pytest.raises(SrpkdError, match="max_images must be positive"):
        build_dataset("single", unaligned_dir / "testB", max_images=0)


# ----------------------------------------------------------------------------- built-in photos


def test_builtin_train_random_crops():
    ds = BuiltinPhotos("train", crop_size=64, length=20)
    assert len(ds) == 20 and not ds.deterministic
    torch.manual_seed(0)
    a = [ds[i]["A"] for i in range(10)]
    torch.manual_seed(0)
    b = [ds[i]["A"] for i in range(10)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # controlled by the torch seed
    assert not torch.equal(ds[0]["A"], ds[0]["A"])  # a new random crop on every access
    assert all(x.shape == (3, 64, 64) and -1 <= x.min() and x.max() <= 1 for x in a)
    names = (TRAIN_PHOTOS * 2)[:9]  # photo i % 7
    assert [ds[i]["A_path"] for i in range(9)] == [f"builtin:{n}#{i}" for i, n in enumerate(names)]
    with pytest.raises(IndexError):
        ds[20]


def test_builtin_fixed_and_test_sets_are_repeatable():
    fixed1 = BuiltinPhotos("train", crop_size=64, length=8, fixed=True)
    fixed2 = BuiltinPhotos("train", crop_size=64, length=8, fixed=True)
    assert fixed1.deterministic and all(torch.equal(fixed1[i]["A"], fixed2[i]["A"]) for i in range(8))
    assert not torch.equal(fixed1[0]["A"], BuiltinPhotos("train", 64, 8, fixed=True, seed=1)[0]["A"])
    t1 = BuiltinPhotos("test", crop_size=64)
    torch.manual_seed(123)  # the global seed does not matter for the test set
    t2 = BuiltinPhotos("test", crop_size=64, flip=True)
    assert len(t1) == 48 and t1.deterministic
    assert all(torch.equal(t1[i]["A"], t2[i]["A"]) and t1[i]["A_path"] == t2[i]["A_path"] for i in range(48))
    assert len({t1[i]["A"].numpy().tobytes() for i in range(48)}) == 48
    # held out by photo: the three splits share no photo (chelsea and skimage's cat are the same picture)
    assert not (set(TEST_PHOTOS) & set(TRAIN_PHOTOS) or set(VAL_PHOTOS) & set(TRAIN_PHOTOS + TEST_PHOTOS))
    assert "cat" not in TRAIN_PHOTOS + VAL_PHOTOS
    assert {t1[i]["A_path"].split("#")[0] for i in range(48)} == {f"builtin:{n}" for n in TEST_PHOTOS}
    v = BuiltinPhotos("val", crop_size=64)
    assert len(v) == 48 and v.deterministic and not v.flip
    assert {v[i]["A_path"].split("#")[0] for i in range(48)} == {f"builtin:{n}" for n in VAL_PHOTOS}
    assert not any(torch.equal(v[i]["A"], t1[i]["A"]) for i in range(48))


def test_builtin_photos_are_real_colour_photos():
    """Every photo loads from its package without a download, in colour, at least 300 px on its short side."""
    for name in TRAIN_PHOTOS + VAL_PHOTOS + TEST_PHOTOS:
        arr = np.asarray(load_photo(name), dtype=np.float32)
        assert min(arr.shape[:2]) >= 300, name
        chroma = np.abs(arr - arr.mean(axis=2, keepdims=True)).mean()
        assert chroma > 5, (name, chroma)  # a grayscale picture has chroma 0


def test_builtin_errors_and_large_crops():
    with pytest.raises(SrpkdError, match="builtin photos have splits 'train', 'val', 'test', not 'valid'"):
        BuiltinPhotos("valid")
    with pytest.raises(SrpkdError, match="unknown builtin photo 'lena'"):
        load_photo("lena")
    big = BuiltinPhotos("test", crop_size=320, length=2)  # larger than chelsea's 300 px height: upscaled
    assert big[1]["A"].shape == (3, 320, 320)


# ----------------------------------------------------------------------------- real data (../shared/data)


@pytest.mark.data
def test_facades_aligned_counts_and_direction(shared_data):
    train = build_dataset("aligned", shared_data / "facades", "train", preprocess="none", flip=False)
    test = build_dataset("aligned", shared_data / "facades", "test", preprocess="none", flip=False)
    assert (len(train), len(test)) == (400, 106)
    ba = AlignedDataset(shared_data / "facades", "test", direction="BtoA")
    i = next(k for k, p in enumerate(ba.files) if p.name == "1.jpg")
    item = ba[i]
    assert item["A"].shape == (3, 256, 256)
    # BtoA: the input is the label map (facades_unpaired testB), the target the photo (testA)
    label = load_image(shared_data / "facades_unpaired" / "testB" / "1.jpg")
    photo = load_image(shared_data / "facades_unpaired" / "testA" / "1.jpg")
    assert (item["A"] - to_tensor(label)).abs().mean() < 0.05 < (item["A"] - to_tensor(photo)).abs().mean()
    assert (item["B"] - to_tensor(photo)).abs().mean() < 0.05


@pytest.mark.data
def test_facades_unpaired(shared_data):
    ds = UnalignedDataset(shared_data / "facades_unpaired", "train", transform=Transform("resize_and_crop", 143, 128))
    assert (len(ds.files_A), len(ds.files_B), len(ds)) == (400, 400, 400)
    assert len(UnalignedDataset(shared_data / "facades_unpaired", "test")) == 106
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["A"].shape == batch["B"].shape == (2, 3, 128, 128)


@pytest.mark.data
def test_edges2shoes_left_half_is_the_photo(shared_data):
    root = shared_data / "edges2shoes_subset"
    ds = build_dataset("aligned", root, "val", preprocess="none", flip=False, max_images=8)
    assert len(AlignedDataset(root, "train")) == 1000 and len(AlignedDataset(root, "val")) == 200

    def colourfulness(x):  # mean spread between channels: 0 for a gray edge map
        return (x.max(0).values - x.min(0).values).mean().item()

    items = [ds[i] for i in range(len(ds))]
    assert sum(colourfulness(it["A"]) for it in items) > 3 * sum(colourfulness(it["B"]) for it in items)
    # edges are mostly white background
    assert all((it["B"] > 0.8).float().mean() > 0.5 for it in items)
