"""Fuzzing the readers of untrusted input: only SrpkdError may come out.

Every reader of a user-supplied file or setting (images, checkpoints, configs,
dataset folders) must either succeed or raise one :class:`srpkd.SrpkdError`;
any other exception would reach the user as a traceback. Hypothesis feeds
random bytes, mutated valid files and random structures into them.

The example counts are bounded so the file runs in well under a minute on two
cores; ``SRPKD_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` fuzzes longer.
Runs are derandomized (the same examples every time, so CI is not flaky);
``SRPKD_FUZZ_RANDOM=1`` draws fresh ones.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from srpkd import SrpkdError, create_generator, save_generator
from srpkd.checkpoint import generator_record, load_generator, load_tensors, save_tensors
from srpkd.config import Config, from_dict, load_config, to_dict
from srpkd.data import datasets
from srpkd.data.images import load_image
from srpkd.models.convert import import_generator

# Pillow warns (corrupt EXIF, bombs) on many fuzzed files; only exceptions matter here.
pytestmark = pytest.mark.filterwarnings("ignore")

N = int(os.environ.get("SRPKD_FUZZ_EXAMPLES", "0")) or None


def fuzz(default: int):
    return settings(
        max_examples=N or default,
        deadline=None,
        derandomize=not os.environ.get("SRPKD_FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _tmpfile(name: str, data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="srpkd-fuzz-"))
    p = d / name
    p.write_bytes(data)
    return p


def _cleanup(p: Path) -> None:
    for f in p.parent.iterdir():
        f.unlink()
    p.parent.rmdir()


# ----------------------------------------------------------------------------- images

FORMATS = {  # PIL format -> extension
    "PNG": ".png",
    "JPEG": ".jpg",
    "BMP": ".bmp",
    "PPM": ".ppm",
    "TIFF": ".tif",
    "WEBP": ".webp",
    "GIF": ".png",  # a GIF under a .png name: the loader must sniff, not trust the extension
}
_VALID: dict[tuple[str, str], bytes] = {}


def valid_image_bytes(fmt: str, mode: str) -> bytes:
    key = (fmt, mode)
    if key not in _VALID:
        rng = np.random.default_rng(len(_VALID))
        arr = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
        img = Image.fromarray(arr, "RGBA").convert(mode)
        if fmt in ("JPEG", "PPM", "BMP") and mode in ("RGBA", "LA", "P"):
            img = img.convert("RGB")
        if fmt == "WEBP" and mode in ("L", "P", "I;16"):
            img = img.convert("RGB")
        if fmt in ("JPEG", "PPM", "BMP", "GIF") and mode == "I;16":
            img = img.convert("L")
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        _VALID[key] = buf.getvalue()
    return _VALID[key]


def check_image(name: str, data: bytes) -> None:
    p = _tmpfile(name, data)
    try:
        img = load_image(p)
    except SrpkdError as e:
        assert str(p) in str(e), f"the error must name the file: {e}"
        assert "\n" not in str(e)
    else:
        assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0
    finally:
        _cleanup(p)


@fuzz(150)
@given(data=st.binary(max_size=2048), ext=st.sampled_from(sorted(set(FORMATS.values()))))
def test_load_image_random_bytes(data, ext):
    check_image("x" + ext, data)


@fuzz(150)
@given(
    data=st.binary(min_size=0, max_size=512),
    magic=st.sampled_from(
        [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"P6\n", b"II*\x00", b"MM\x00*",
         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a"]
    ),
)
def test_load_image_magic_then_garbage(data, magic):
    # a plausible signature makes Pillow pick a decoder and go deeper than for plain noise
    check_image("x.png", magic + data)


@st.composite
def mutated_image(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "P", "I;16", "LA"]))
    if fmt == "PNG" or mode in ("RGB", "L"):
        pass
    data = bytearray(valid_image_bytes(fmt, mode))
    n_mut = draw(st.integers(1, 6))
    for _ in range(n_mut):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite_int"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        else:  # a large or negative integer where a size/offset field may be
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 65535, 65536]))
            data[i : i + 4] = struct.pack(draw(st.sampled_from(["<I", ">I"])), value)
    return FORMATS[fmt], bytes(data)


@fuzz(300)
@given(mutated_image())
def test_load_image_mutated_valid_files(case):
    ext, data = case
    check_image("x" + ext, data)


def test_load_image_valid_formats_and_modes():
    """The unmutated seeds load (so the mutations start from real files)."""
    for fmt in FORMATS:
        for mode in ["RGB", "RGBA", "L", "P", "I;16", "LA"]:
            check_image("x" + FORMATS[fmt], valid_image_bytes(fmt, mode))
            p = _tmpfile("x" + FORMATS[fmt], valid_image_bytes(fmt, mode))
            try:
                assert load_image(p).size == (10, 12)
            finally:
                _cleanup(p)


def test_load_image_decompression_bomb_is_one_error(tmp_path):
    """A tiny PNG that claims 100000 x 100000 pixels is refused, not allocated."""
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(png)
    with pytest.raises(SrpkdError, match="bomb.png"):
        load_image(p)


# ----------------------------------------------------------------------------- checkpoints


def check_checkpoint(data: bytes, name: str = "c.safetensors") -> None:
    p = _tmpfile(name, data)
    try:
        for reader in (load_tensors, load_generator):
            try:
                reader(p)
            except SrpkdError as e:
                assert "\n" not in str(e)
    finally:
        _cleanup(p)


def safetensors_bytes(header: object, body: bytes = b"", length: int | None = None) -> bytes:
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h) if length is None else length) + h + body


@fuzz(100)
@given(st.binary(max_size=1024))
def test_checkpoint_random_bytes(data):
    check_checkpoint(data)


@fuzz(100)
@given(length=st.integers(0, 2**64 - 1), rest=st.binary(max_size=256))
def test_checkpoint_bogus_header_length(length, rest):
    check_checkpoint(struct.pack("<Q", length) + rest)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@fuzz(100)
@given(header=json_values)
def test_checkpoint_random_json_header(header):
    check_checkpoint(safetensors_bytes(header))


ARCHS = ["resnet_9blocks", "resnet_6blocks", "mobile_resnet_9blocks", "unet_128", "unet_256", "patchgan", "nope"]
KWARG_NAMES = ["ngf", "norm", "dropout", "in_channels", "out_channels", "n_blocks", "num_downs", "bogus"]
kwarg_values = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([10**6, 10**12, 2**63, 0.5, 2.5, -1.0, True, None, "instance", "batch", "none", "x", [], {}]),
)
records = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from([1, 2, "1", None]),
        "kind": st.sampled_from(["generator", "training", "discriminator", 5, None]),
        "arch": st.sampled_from(ARCHS) | st.integers() | st.none(),
        "kwargs": st.dictionaries(st.sampled_from(KWARG_NAMES), kwarg_values, max_size=4) | json_values,
        "generator_prefix": st.sampled_from(["G.", "G_A.", "", 5, None]),
        "generators": json_values
        | st.dictionaries(
            st.sampled_from(["G.", "G_A."]),
            st.fixed_dictionaries({
                "arch": st.sampled_from(ARCHS),
                "kwargs": st.dictionaries(st.sampled_from(KWARG_NAMES), kwarg_values, max_size=3),
            }),
            max_size=2,
        ),
    },
)


@fuzz(120)
@given(record=records | json_values, as_text=st.booleans())
def test_checkpoint_random_srpkd_metadata(record, as_text):
    """A valid safetensors file whose srpkd record is random: never a traceback, never a huge allocation."""
    meta = {"srpkd": json.dumps(record) if as_text else str(record)}
    tensors = {"stem.1.weight": torch.zeros(4, 3, 7, 7)}
    check_checkpoint(safetensors.torch.save(tensors, metadata=meta))


DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "C64", "XX", 5]


@st.composite
def tensor_records(draw):
    """Random safetensors headers: dtypes, shapes and offsets that may not agree with the data."""
    header = {}
    n = draw(st.integers(0, 4))
    offset = 0
    for i in range(n):
        name = draw(st.sampled_from(["stem.1.weight", "stem.1.bias", f"t{i}", "", "__metadata__x"]))
        shape = draw(st.lists(st.integers(-1, 6) | st.sampled_from([2**40, 2**63]), max_size=4))
        size = draw(st.integers(0, 64))
        start = draw(st.sampled_from([offset, offset + 1, 0, max(offset - 1, 0)]))
        end = draw(st.sampled_from([start + size, start, start - 1, 2**63]))
        rec = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape, "data_offsets": [start, end]}
        if draw(st.booleans()):
            rec = draw(st.sampled_from(
                [{"dtype": "F32"}, {"shape": [1]}, [], "x", {"dtype": "F32", "shape": [1], "data_offsets": [0]}]
            ))
        header[name] = rec
        offset = max(offset, end if isinstance(end, int) and end < 2**20 else offset)
    if draw(st.booleans()):
        record = {"format": 1, "kind": "generator", "arch": "resnet_6blocks", "kwargs": {"ngf": 1}}
        header["__metadata__"] = {"srpkd": json.dumps(record)}
    body = draw(st.binary(max_size=256))
    return safetensors_bytes(header, body)


@fuzz(150)
@given(tensor_records())
def test_checkpoint_random_tensor_records(data):
    check_checkpoint(data)


@pytest.fixture(scope="module")
def tiny_checkpoint_bytes():
    d = Path(tempfile.mkdtemp())
    save_generator(create_generator("resnet_6blocks", ngf=2), d / "g.safetensors")
    data = (d / "g.safetensors").read_bytes()
    (d / "g.safetensors").unlink()
    d.rmdir()
    return data


@fuzz(150)
@given(data=st.data())
def test_checkpoint_mutated_valid_file(tiny_checkpoint_bytes, data):
    buf = bytearray(tiny_checkpoint_bytes)
    (hlen,) = struct.unpack("<Q", buf[:8])
    for _ in range(data.draw(st.integers(1, 4))):
        # mostly inside the header, where structure lives; sometimes anywhere
        hi = 8 + hlen if data.draw(st.booleans()) else len(buf)
        i = data.draw(st.integers(0, max(hi - 1, 0)))
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if kind == "flip" and i < len(buf):
            buf[i] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[i : i + data.draw(st.integers(1, 8))]
    check_checkpoint(bytes(buf))


@pytest.mark.parametrize(
    "record, match",
    [
        ({"kind": "generator", "arch": "resnet_9blocks", "kwargs": {"ngf": -1}}, "cannot build"),
        ({"kind": "generator", "arch": "resnet_9blocks", "kwargs": {"ngf": 10**12}}, "cannot build|does not fit"),
        ({"kind": "generator", "arch": "resnet_9blocks", "kwargs": {"ngf": 10**5}}, "does not fit"),
        ({"kind": "generator", "arch": "resnet_9blocks", "kwargs": {"ngf": 2.5}}, "cannot build"),
        ({"kind": "generator", "arch": "resnet_9blocks", "kwargs": {"dropout": 5}}, "cannot build"),
        ({"kind": "training", "generators": [1]}, "corrupt srpkd metadata"),
        ({"kind": "training", "generators": {"G.": 5}}, "malformed architecture record"),
        ({"kind": "training", "generator_prefix": 5, "generators": {}}, "corrupt srpkd metadata"),
    ],
)
def test_checkpoint_found_by_fuzzing(tmp_path, record, match):
    """Regressions: each of these used to escape as RuntimeError/ValueError/AttributeError (or allocate 588 TB)."""
    p = tmp_path / "c.safetensors"
    save_tensors(p, {"stem.1.weight": torch.zeros(4, 3, 7, 7)}, record)
    with pytest.raises(SrpkdError, match=match):
        load_generator(p)


def test_checkpoint_wrong_dtype_is_refused(tmp_path):
    g = create_generator("resnet_6blocks", ngf=2)
    state = {k: (v.to(torch.int64) if k == "stem.1.weight" else v) for k, v in g.state_dict().items()}
    save_tensors(tmp_path / "c.safetensors", state, generator_record(g))
    with pytest.raises(SrpkdError, match="stem.1.weight is torch.int64"):
        load_generator(tmp_path / "c.safetensors")


# ----------------------------------------------------------------------------- configs


def check_config(fn) -> None:
    try:
        cfg = fn()
    except SrpkdError as e:
        assert "\n" not in str(e), repr(str(e))
    else:
        assert isinstance(cfg, Config)


@fuzz(200)
@given(st.text(max_size=200))
def test_config_random_yaml_text(text):
    p = _tmpfile("c.yaml", text.encode("utf-8", "surrogatepass"))
    try:
        check_config(lambda: load_config(p))
    finally:
        _cleanup(p)


@fuzz(60)
@given(st.binary(max_size=200))
def test_config_random_bytes(data):
    p = _tmpfile("c.yaml", data)
    try:
        check_config(lambda: load_config(p))
    finally:
        _cleanup(p)


def _key_paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict) and v:
            out += _key_paths(v, prefix + k + ".")
    return out


KEY_PATHS = _key_paths(to_dict(Config())) + ["bogus", "optim.bogus", "student.kwargs.ngf", "a.b.c", ""]
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(
        [".nan", ".inf", "-.inf", "1e3", "0x10", "~", "[1, 2]", "{a: 1}", "yes", "'", "[", "!!python/none ''"]
    ),
)


@fuzz(200)
@given(st.lists(st.tuples(st.sampled_from(KEY_PATHS), yaml_scalars), max_size=5))
def test_config_random_overrides(items):
    overrides = []
    for key, value in items:
        if isinstance(value, str):
            overrides.append(f"{key}={value}")
        else:
            overrides.append(f"{key}={json.dumps(value) if value == value else '.nan'}")
    check_config(lambda: load_config(None, ["optim.steps=1", *overrides]))


@fuzz(150)
@given(st.data())
def test_config_random_nested_dicts(data):
    """from_dict on the default dict with random leaves replaced by random structures."""
    d = to_dict(Config())
    d["optim"]["steps"] = 1
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(KEY_PATHS)).split(".")
        node = d
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[path[-1]] = data.draw(json_values | yaml_scalars)
    check_config(lambda: from_dict(d))


@pytest.mark.parametrize(
    "override",
    ["optim.lr=.inf", "optim.beta1=.nan", "optim.beta2=.inf", "loss.kd=.inf", "student.dropout=.nan", "loss.srp=.nan"],
)
def test_config_non_finite_numbers_are_refused(override):
    """A NaN or infinite hyper-parameter would poison training silently; the config refuses it."""
    with pytest.raises(SrpkdError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, ["optim.steps=1", override])


# ----------------------------------------------------------------------------- dataset folders


@fuzz(40)
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["0.png", "1.jpg", "2.bmp", "a.png", "b.jpg", "c.txt", ".hidden.png", "sub/d.png"]),
            st.binary(max_size=300),
        ),
        max_size=5,
    ),
    mode=st.sampled_from(["aligned", "unaligned", "single"]),
)
def test_datasets_on_folders_of_random_files(files, mode):
    """Dataset construction and reading every item: SrpkdError or tensors, never another exception."""
    root = Path(tempfile.mkdtemp(prefix="srpkd-fuzz-ds-"))
    try:
        split = {"aligned": ["train"], "unaligned": ["trainA", "trainB"], "single": ["train"]}[mode]
        for i, (name, data) in enumerate(files):
            p = root / split[i % len(split)] / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        try:
            ds = _build_dataset(mode, root)
            for i in range(min(len(ds), 6)):
                ds[i]
        except SrpkdError as e:
            assert "\n" not in str(e)
    finally:
        shutil.rmtree(root)


def _build_dataset(mode, root):
    return datasets.build_dataset(mode, root, split="train", load_size=16, crop_size=8, preprocess="resize_and_crop")


# ----------------------------------------------------------------------------- foreign .pth (srpkd import)


@pytest.fixture(scope="module")
def tiny_pth_bytes():
    buf = io.BytesIO()
    torch.save({"model.1.weight": torch.zeros(2, 3, 7, 7), "model.1.bias": torch.zeros(2)}, buf)
    return buf.getvalue()


def check_pth(data: bytes) -> None:
    p = _tmpfile("w.pth", data)
    try:
        import_generator(p)
    except SrpkdError as e:
        assert "\n" not in str(e)
    finally:
        _cleanup(p)


@fuzz(80)
@given(st.binary(max_size=1024))
def test_import_random_bytes(data):
    check_pth(data)


@fuzz(120)
@given(data=st.data())
def test_import_mutated_pth(tiny_pth_bytes, data):
    """A torch.save zip archive with flipped, cut or inserted bytes."""
    buf = bytearray(tiny_pth_bytes)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(buf) - 1))
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        if kind == "flip":
            buf[i] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del buf[i:]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        if not buf:
            break
    check_pth(bytes(buf))


torch_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(max_size=6) | st.builds(lambda n: torch.zeros(n), st.integers(0, 3)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), c, max_size=3),
    max_leaves=8,
)


@fuzz(100)
@given(torch_values)
def test_import_random_structures(obj):
    """Anything torch.save can write with weights_only-safe types: a state_dict or one clear error."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    check_pth(buf.getvalue())


@pytest.mark.parametrize(
    "data",
    [b"G", b"a", b"\x80\x02X\x05\x00\x00\x00", "int_keys"],
    ids=["struct_error", "index_error", "short_string", "int_keys"],
)
def test_import_found_by_fuzzing(tmp_path, data):
    """Regressions: torch.load(weights_only=True) on garbage raises struct.error/IndexError, which
    srpkd.models.convert.read_state let through; a state_dict with int keys hit k.startswith."""
    if data == "int_keys":
        buf = io.BytesIO()
        torch.save({0: torch.zeros(1)}, buf)
        data = buf.getvalue()
    p = tmp_path / "w.pth"
    p.write_bytes(data)
    with pytest.raises(SrpkdError, match="w.pth"):
        import_generator(p)


def test_checkpoint_huge_empty_shape_found_by_fuzzing(tmp_path):
    """Regression: a zero-size tensor of shape [0, 2**63] passes safetensors' checks and made
    torch's reshape raise TypeError (found with SRPKD_FUZZ_RANDOM=1 SRPKD_FUZZ_EXAMPLES=600)."""
    p = tmp_path / "c.safetensors"
    p.write_bytes(safetensors_bytes({"stem.1.weight": {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [0, 0]}}))
    for reader in (load_tensors, load_generator):
        with pytest.raises(SrpkdError, match="c.safetensors"):
            reader(p)


@pytest.mark.parametrize("value", ['{"": null}', "{a: b}", "{1: 2}", "enc"])
def test_config_mapping_for_a_list_found_by_fuzzing(value):
    """Regression: a mapping where a list of tap names belongs made dacite raise ValueError."""
    with pytest.raises(SrpkdError, match=r"loss\.feat_taps must be a list"):
        load_config(None, ["optim.steps=1", f"loss.feat_taps={value}"])
