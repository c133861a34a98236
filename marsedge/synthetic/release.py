"""The release 0.6 layout of the synthetic generator, its real-style names, and PDS copies.

Used by `synthetic/navcam.py` only when `--release 0.6` or `--pds N` is given, so the default output
(release 0.1) stays byte-for-byte what it was. Names follow the real archive:

    MSL    NLB_<sclk 9>EDR_F<seq 7>NCAM<5 digits>M1                     msl/ncam/images/edr/*.JPG
    M2020  NLF_<sol 4>_<sclk 10>_<3 digits>ECM_N<7 digits>NCAM<5>_01_295J  m2020/images/ncam/*.png
    MER    1N<sclk 9>EFF<site 4>P<seq 4>L0M1                            mer/images/eff|test/*.JPG

MER test labels are named `MER_TEST_<nnnn>.png`, not after their image: like the real release,
`masked-gold-min3-100agree/test.csv` (rows: label stem, image file name) pairs them.

PDS copies (`write_pds_copies`) turn the written 8-bit frame into 12-bit samples
(round(v x 4095 / 255), which scale back to v exactly) and write, under `pds/<mission>/pds3|pds4/`, a PDS3
`.IMG` with an attached label, a VICAR-style `^IMAGE_HEADER` ("LBLSIZE=...") before `^IMAGE`,
MSB 16-bit words with `SAMPLE_BIT_MASK = 2#0000111111111111#`, and a PDS4 `.xml` + `.dat`
(`Array_2D_Image`, or `Array_3D_Image` for colour, UnsignedMSB2, `img:sample_bits` 12).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from marsedge.data import ai4mars
from marsedge.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from marsedge.terrain import CLASS_NAMES, NUM_TERRAIN_CLASSES

LABEL_KEYS = {**{str(i): CLASS_NAMES[i] for i in range(NUM_TERRAIN_CLASSES)}, "255": "null"}


def frame_stem(mission: str, index: int) -> str:
    """A real-style product id, unique per index (frames of one drive share a clock window)."""
    if mission == "msl":
        return f"NLB_{527820640 + 977 * index:09d}EDR_F{580000 + index:07d}NCAM{253 + index % 50:05d}M1"
    if mission == "mer":
        return f"1N{128285276 + 613 * index:09d}EFF{454 + index // 40:04d}P{1837 + index % 1000:04d}L0M1"
    sol, sclk = 9 + index // 20, 667755959 + 1000 * index
    seq, camera = 30000 + index, 5000 + index % 100
    return f"NLF_{sol:04d}_{sclk:010d}_{index % 1000:03d}ECM_N{seq:07d}NCAM{camera:05d}_01_295J"


def mer_label_stem(index: int) -> str:
    return f"MER_TEST_{index:04d}"


def paths(root: Path, mission: str, plan) -> dict[str, Path]:
    """Where one frame of a 0.6 tree goes (the keys `synthetic.render_frame` writes)."""
    stem, test = plan.stem, plan.role == "test"
    if mission == "msl":
        from marsedge.synthetic.navcam import msl_paths  # synthetic imports this module

        return msl_paths(root / "msl" / "ncam", stem)
    if mission == "mer":
        label = f"{mer_label_stem(plan.index)}.png"
        return {
            "image": root / (ai4mars.MER_TEST_IMAGES if test else ai4mars.MER_TRAIN_IMAGES) / f"{stem}.JPG",
            "crowd": root / "mer/labels/crowd" / stem,
            "train": root / ai4mars.MER_TRAIN / f"{stem}_merged.png",
            "gold-min2": root / ai4mars.MER_GOLD["mer-test-min2"] / label,
            "gold-min3": root / ai4mars.MER_GOLD["mer-test-min3"] / label,
        }
    if test:  # the expert M2020 set: greyscale frames, dense labels (the min1 gold rule)
        return {
            "image": root / ai4mars.M2020_TEST_IMAGES / f"{stem}.png",
            "gold-min1": root / ai4mars.M2020_TEST / f"{stem}_merged.png",
        }
    return {
        "image": root / ai4mars.M2020_IMAGES / f"{stem}.png",
        "crowd": root / ai4mars.M2020_CROWD / stem,
        "train": root / ai4mars.M2020_TRAIN / f"{stem}_merged.png",
    }


def write_release_files(root: Path, mission: str, plans: list) -> None:
    """`label_keys.json` at the root, and for MER the test.csv pairing of gold labels to images."""
    atomic_write_json(root / ai4mars.LABEL_KEYS, LABEL_KEYS)
    tests = [p for p in plans if p.role == "test"]
    if mission == "mer" and tests:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for plan in tests:
            writer.writerow([mer_label_stem(plan.index), f"{plan.stem}.JPG"])
        atomic_write_text(root / ai4mars.MER_GOLD["mer-test-min3"] / ai4mars.MER_PAIRING, buf.getvalue())


def _pds3_bytes(samples: np.ndarray, product_id: str) -> bytes:
    """PDS3 attached label + VICAR header + MSB 16-bit image (bands x lines x samples)."""
    bands, lines, cols = samples.shape
    record = 2 * cols
    vicar = f"LBLSIZE={record * 2:<8}FORMAT='HALF'  TYPE='IMAGE'  NL={lines}  NS={cols}  NB={bands}".encode()
    header = vicar[: record * 2].ljust(record * 2, b" ")

    def label(n: int) -> bytes:
        text = [
            "PDS_VERSION_ID = PDS3",
            "RECORD_TYPE = FIXED_LENGTH",
            f"RECORD_BYTES = {record}",
            f"FILE_RECORDS = {n + 2 + bands * lines}",
            f"LABEL_RECORDS = {n}",
            f"^IMAGE_HEADER = {n + 1}",
            f"^IMAGE = {n + 3}",
            f'PRODUCT_ID = "{product_id}"',
            "OBJECT = IMAGE_HEADER",
            f"  BYTES = {len(header)}",
            "  HEADER_TYPE = VICAR2",
            "END_OBJECT = IMAGE_HEADER",
            "OBJECT = IMAGE",
            f"  LINES = {lines}",
            f"  LINE_SAMPLES = {cols}",
            "  SAMPLE_TYPE = MSB_UNSIGNED_INTEGER",
            "  SAMPLE_BITS = 16",
            "  SAMPLE_BIT_MASK = 2#0000111111111111#",
            f"  BANDS = {bands}",
            "  BAND_STORAGE_TYPE = BAND_SEQUENTIAL",
            "END_OBJECT = IMAGE",
            "END",
            "",
        ]
        return "\r\n".join(text).encode()

    n = 1
    while len(label(n)) > n * record:
        n += 1
    return label(n).ljust(n * record, b" ") + header + samples.astype(">u2").tobytes()


def _pds4_label(samples: np.ndarray, stem: str, data_name: str) -> str:
    axes = [("Line", samples.shape[1]), ("Sample", samples.shape[2])]
    if samples.shape[0] > 1:
        axes.insert(0, ("Band", samples.shape[0]))
    kind = f"Array_{len(axes)}D_Image"
    axis_xml = "\n".join(
        f"      <Axis_Array><axis_name>{name}</axis_name><elements>{n}</elements>"
        f"<sequence_number>{i + 1}</sequence_number></Axis_Array>"
        for i, (name, n) in enumerate(axes)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Product_Observational xmlns="http://pds.nasa.gov/pds4/pds/v1" xmlns:img="http://pds.nasa.gov/pds4/img/v1">
  <Identification_Area>
    <logical_identifier>urn:nasa:pds:marsedge_synthetic:data:{stem.lower()}</logical_identifier>
    <version_id>1.0</version_id><title>{stem}</title>
    <information_model_version>1.15.0.0</information_model_version>
    <product_class>Product_Observational</product_class>
  </Identification_Area>
  <Observation_Area><Discipline_Area><img:Imaging><img:Sampling>
    <img:sample_bits>12</img:sample_bits><img:sample_bit_mask>2#0000111111111111</img:sample_bit_mask>
  </img:Sampling></img:Imaging></Discipline_Area></Observation_Area>
  <File_Area_Observational>
    <File><file_name>{data_name}</file_name></File>
    <{kind}>
      <local_identifier>image</local_identifier><offset unit="byte">0</offset><axes>{len(axes)}</axes>
      <axis_index_order>Last Index Fastest</axis_index_order>
      <Element_Array><data_type>UnsignedMSB2</data_type></Element_Array>
{axis_xml}
    </{kind}>
  </File_Area_Observational>
</Product_Observational>
"""


def write_pds_copies(root: Path, mission: str, plans: list, image_path: Callable) -> list[str]:
    """PDS3 and PDS4 copies of the given frames under root/pds/<mission>/pds3|pds4/ (apart: a folder
    lists a data file and a same-stem label as one product); returns what was written."""
    from marsedge.data.frames import read_frame

    out = root / "pds" / mission
    written = []
    for plan in plans:
        frame = read_frame(image_path(plan))
        cube = frame[None] if frame.ndim == 2 else np.moveaxis(frame, -1, 0)
        samples = np.round(cube.astype(np.float64) * 4095 / 255).astype(np.uint16)
        atomic_write_bytes(out / "pds3" / f"{plan.stem}.IMG", _pds3_bytes(samples, plan.stem))
        atomic_write_bytes(out / "pds4" / f"{plan.stem}.dat", samples.astype(">u2").tobytes())
        atomic_write_text(
            out / "pds4" / f"{plan.stem}.xml", _pds4_label(samples, plan.stem, f"{plan.stem}.dat")
        )
        written += [f"pds/{mission}/pds3/{plan.stem}.IMG", f"pds/{mission}/pds4/{plan.stem}.xml"]
    return written
