"""The standard pix2pix and CycleGAN datasets: where the original projects download them from.

pytorch-CycleGAN-and-pix2pix's download scripts fetch
``<host>/pix2pix/datasets/NAME.tar.gz`` (paired, A|B side by side in
``train/``, ``val/``, ``test/``) and ``<host>/cyclegan/datasets/NAME.zip``
(unpaired, ``trainA/``, ``trainB/``, ``testA/``, ``testB/``), host
``http://efrosgans.eecs.berkeley.edu``. ``SRPKD_DATASETS_HOST`` or
``srpkd data download --host`` points elsewhere (a mirror; the tests' local
server).

Sizes and SHA-256 sums: the CycleGAN archives' are those TensorFlow Datasets
records for the same files (``tensorflow_datasets/url_checksums/cycle_gan.txt``,
from when they were served at ``people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/``);
no public list of the pix2pix archives' sizes or sums was found, so those are
checked against the server's Content-Length only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import SrpkdError

DEFAULT_HOST = "http://efrosgans.eecs.berkeley.edu"
HOST_ENV = "SRPKD_DATASETS_HOST"
TFDS = "TensorFlow Datasets url_checksums/cycle_gan.txt"


@dataclass(frozen=True)
class Archive:
    """One downloadable dataset."""

    name: str  # what srpkd data download takes (pix2pix/NAME, cyclegan/NAME, or NAME when unambiguous)
    family: str  # pix2pix | cyclegan
    layout: str  # aligned (A|B pairs) | unaligned (trainA/trainB)
    size: int | None = None  # bytes, when a public source records them
    sha256: str | None = None
    source: str | None = None  # where size and sha256 come from

    @property
    def stem(self) -> str:
        return self.name.split("/")[-1]

    @property
    def filename(self) -> str:
        return f"{self.stem}.tar.gz" if self.family == "pix2pix" else f"{self.stem}.zip"

    def url(self, host: str | None = None) -> str:
        host = (host or os.environ.get(HOST_ENV) or DEFAULT_HOST).rstrip("/")
        return f"{host}/{self.family}/datasets/{self.filename}"


PIX2PIX = ("facades", "maps", "edges2shoes", "edges2handbags", "night2day")
CYCLEGAN = {  # name: (bytes, sha256) as recorded by TensorFlow Datasets
    "apple2orange": (78456409, "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8"),
    "summer2winter_yosemite": (132640856, "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9"),
    "horse2zebra": (116867962, "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1"),
    "monet2photo": (305231073, "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04"),
    "cezanne2photo": (279885071, "3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff"),
    "ukiyoe2photo": (292946532, "02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08"),
    "vangogh2photo": (306590349, "362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff"),
    "iphone2dslr_flower": (339964458, "8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113"),
    "maps": (1476754427, "639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e"),
    "cityscapes": (279601602, "d2f6910fd056c1ee9873777ae838e7ac4a2c833598ae62a04188e5ab2f4ea036"),
    "facades": (35135868, "9a31ebf3a31b9b5cd195dd5bf62e9308e00cb94604d1019e3889ac84248695c0"),
}

ARCHIVES: dict[str, Archive] = {
    **{f"pix2pix/{n}": Archive(f"pix2pix/{n}", "pix2pix", "aligned") for n in PIX2PIX},
    **{f"cyclegan/{n}": Archive(f"cyclegan/{n}", "cyclegan", "unaligned", size, sha, TFDS)
       for n, (size, sha) in CYCLEGAN.items()},
}

# Not served by the pix2pix host (the download script explains why); the CycleGAN host keeps an unpaired copy.
REFUSED = {
    "cityscapes": "the pix2pix host does not serve Cityscapes (because of the Cityscapes licence): download "
                  "gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from https://cityscapes-dataset.com, "
                  "then pair label and photo folders with 'srpkd data combine'; the CycleGAN project's unpaired "
                  "copy is 'cyclegan/cityscapes'",
}


def names() -> list[str]:
    """Every name ``find`` accepts, short names included."""
    return sorted(ARCHIVES) + sorted(short_names())


def short_names() -> dict[str, str]:
    """NAME -> pix2pix/NAME or cyclegan/NAME; a name in both families means the pix2pix (paired) one."""
    out = {a.stem: key for key, a in ARCHIVES.items() if a.family == "cyclegan"}
    out.update({a.stem: key for key, a in ARCHIVES.items() if a.family == "pix2pix"})
    return {stem: key for stem, key in out.items() if stem not in REFUSED}


def find(name: str) -> Archive:
    if name in ARCHIVES:
        return ARCHIVES[name]
    if name in REFUSED:
        raise SrpkdError(f"{name}: {REFUSED[name]}")
    key = short_names().get(name)
    if key is None:
        listed = ", ".join(sorted(short_names()))
        raise SrpkdError(f"unknown dataset {name!r}; choose one of: {listed} (or pix2pix/NAME, cyclegan/NAME; "
                         f"'srpkd data list' shows them all)")
    return ARCHIVES[key]
