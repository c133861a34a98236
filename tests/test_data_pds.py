"""PDS3 and PDS4 products built by hand from the standards (label text + bytes), read by the label.

PDS3 Standards Reference ch. 5 (pointers: record numbers are 1-based, `<BYTES>` offsets 1-based),
appendix A.20 (IMAGE: LINES, LINE_SAMPLES, SAMPLE_TYPE, SAMPLE_BITS, SAMPLE_BIT_MASK, BANDS,
BAND_STORAGE_TYPE, LINE_PREFIX_BYTES, LINE_SUFFIX_BYTES); MSL/MER EDRs carry an IMAGE_HEADER object
(a VICAR label, text "LBLSIZE=...") before the IMAGE. PDS4 Information Model: Array_2D_Image /
Array_3D_Image with offset, Axis_Array, Element_Array/data_type, Special_Constants.
"""

from __future__ import annotations

import numpy as np
import pytest

from marsedge.data.frames import list_frames, read_frame
from marsedge.data.pds import read_pds_product
from marsedge.errors import FrameError

WORDS = (np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 87) % 4096  # 12-bit samples
WORDS[0, 0] = 4095
LINEAR_12 = np.round(WORDS.astype(np.float64) * 255 / 4095).astype(np.uint8)
VICAR = b"LBLSIZE=96              FORMAT='HALF'  TYPE='IMAGE'  BUFSIZ=16  DIM=3  EOL=0  RECSIZE=16"


def _dtype(sample_type: str, bits: int) -> str:
    order = "<" if sample_type.startswith("LSB") else ">"
    return f"{order}{'u' if 'UNSIGNED' in sample_type else 'i'}{bits // 8}"


def write_pds3(
    path,
    samples: np.ndarray,  # bands x lines x samples, or lines x samples
    sample_type: str = "MSB_UNSIGNED_INTEGER",
    bits: int = 16,
    bit_mask: str | None = "2#0000111111111111#",
    header: bytes = b"",
    prefix: int = 0,
    suffix: int = 0,
    storage: str = "BAND_SEQUENTIAL",
    pointer: str = "records",  # "records", "bytes" or "detached"
    extra_lines: int = 0,  # a lying label declares more lines than the file holds
) -> None:
    cube = samples[None] if samples.ndim == 2 else samples
    bands, lines, cols = cube.shape
    order = {"BAND_SEQUENTIAL": (0, 1, 2), "LINE_INTERLEAVED": (1, 0, 2), "SAMPLE_INTERLEAVED": (1, 2, 0)}
    stored = cube.transpose(order[storage]).astype(_dtype(sample_type, bits))
    rows = stored.reshape(lines, -1) if storage == "SAMPLE_INTERLEAVED" else stored.reshape(-1, cols)
    body = b"".join(b"\xaa" * prefix + row.tobytes() + b"\x55" * suffix for row in rows)
    record = prefix + suffix + rows.shape[1] * (bits // 8)
    header_records = -(-len(header) // record)
    data_name = path.with_suffix(".IMG").name

    def label(label_records: int) -> bytes:
        first = 1 if pointer == "detached" else label_records + 1
        image_record = first + header_records
        text = ["PDS_VERSION_ID = PDS3", "RECORD_TYPE = FIXED_LENGTH", f"RECORD_BYTES = {record}"]
        if pointer != "detached":
            text.append(f"LABEL_RECORDS = {label_records}")
        if header:
            where = f'("{data_name}", {first})' if pointer == "detached" else str(first)
            text.append(f"^IMAGE_HEADER = {where}")
        if pointer == "detached":
            text.append(f'^IMAGE = ("{data_name}", {image_record})')
        elif pointer == "bytes":
            text.append(f"^IMAGE = {(image_record - 1) * record + 1} <BYTES>")
        else:
            text.append(f"^IMAGE = {image_record}")
        if header:
            text += [
                "OBJECT = IMAGE_HEADER",
                f"  BYTES = {len(header)}",
                "  HEADER_TYPE = VICAR2",
                "END_OBJECT = IMAGE_HEADER",
            ]
        text += [
            "OBJECT = IMAGE",
            f"  LINES = {lines + extra_lines}",
            f"  LINE_SAMPLES = {cols}",
            f"  SAMPLE_TYPE = {sample_type}",
            f"  SAMPLE_BITS = {bits}",
            f"  BANDS = {bands}",
            f"  BAND_STORAGE_TYPE = {storage}",
        ]
        if bit_mask:
            text.append(f"  SAMPLE_BIT_MASK = {bit_mask}")
        if prefix:
            text.append(f"  LINE_PREFIX_BYTES = {prefix}")
        if suffix:
            text.append(f"  LINE_SUFFIX_BYTES = {suffix}")
        text += ["END_OBJECT = IMAGE", "END", ""]
        return "\r\n".join(text).encode()

    data = header.ljust(header_records * record, b" ") + body
    if pointer == "detached":
        path.write_bytes(label(0))
        path.with_suffix(".IMG").write_bytes(data)
        return
    n = 1
    while len(label(n)) > n * record:
        n += 1
    path.write_bytes(label(n).ljust(n * record, b" ") + data)


def test_vicar_image_header_is_skipped_by_the_image_pointer(tmp_path):
    path = tmp_path / "NLB_527820640EDR_F0580000NCAM00253M1.IMG"
    write_pds3(path, WORDS, header=VICAR)
    assert b"LBLSIZE=" in path.read_bytes()
    np.testing.assert_array_equal(read_frame(path), LINEAR_12)


@pytest.mark.parametrize("pointer", ["records", "bytes"])
def test_record_and_byte_pointers(tmp_path, pointer):
    path = tmp_path / f"{pointer}.IMG"
    write_pds3(path, WORDS, pointer=pointer, header=VICAR)
    np.testing.assert_array_equal(read_frame(path), LINEAR_12)


def test_detached_label_reads_its_data_file_and_lists_once(tmp_path):
    label = tmp_path / "EDR.LBL"
    write_pds3(label, WORDS, pointer="detached", header=VICAR)
    assert (tmp_path / "EDR.IMG").is_file()
    np.testing.assert_array_equal(read_frame(label), LINEAR_12)
    assert list_frames(tmp_path) == [label]


def test_lsb_and_signed_sample_types(tmp_path):
    write_pds3(tmp_path / "lsb.IMG", WORDS, sample_type="LSB_UNSIGNED_INTEGER")
    np.testing.assert_array_equal(read_frame(tmp_path / "lsb.IMG"), LINEAR_12)
    signed = WORDS.astype(np.int16) - 2000
    write_pds3(tmp_path / "signed.IMG", signed, sample_type="MSB_INTEGER", bit_mask=None)
    image = read_pds_product(tmp_path / "signed.IMG")
    np.testing.assert_array_equal(image.array, signed)  # negative samples kept as samples ...
    assert read_frame(tmp_path / "signed.IMG")[signed < 0].max() == 0  # ... and clip to black


def test_line_prefix_and_suffix_bytes_are_not_pixels(tmp_path):
    write_pds3(tmp_path / "prefix.IMG", WORDS, prefix=6)
    np.testing.assert_array_equal(read_frame(tmp_path / "prefix.IMG"), LINEAR_12)
    write_pds3(tmp_path / "both.IMG", WORDS, prefix=4, suffix=2)  # pdr refuses suffixes; read here
    np.testing.assert_array_equal(read_frame(tmp_path / "both.IMG"), LINEAR_12)


def test_8_bit_and_16_bit_with_and_without_a_12_bit_mask(tmp_path):
    bytes_ = (WORDS % 256).astype(np.uint8)
    write_pds3(tmp_path / "u8.IMG", bytes_, bits=8, bit_mask=None)
    np.testing.assert_array_equal(read_frame(tmp_path / "u8.IMG"), bytes_)
    write_pds3(tmp_path / "m12.IMG", WORDS | 0xF000)  # garbage in the top nibble: the mask drops it
    np.testing.assert_array_equal(read_frame(tmp_path / "m12.IMG"), LINEAR_12)
    write_pds3(tmp_path / "u16.IMG", WORDS, bit_mask="2#1111111111111111#")
    assert read_frame(tmp_path / "u16.IMG").max() == round(4095 * 255 / 65535)


@pytest.mark.parametrize("storage", ["BAND_SEQUENTIAL", "LINE_INTERLEAVED", "SAMPLE_INTERLEAVED"])
@pytest.mark.parametrize("suffix", [0, 2])
def test_three_band_storage_orders_give_rgb(tmp_path, storage, suffix):
    cube = np.stack([WORDS, 4095 - WORDS, WORDS // 2])
    write_pds3(tmp_path / "rgb.IMG", cube, storage=storage, suffix=suffix)
    frame = read_frame(tmp_path / "rgb.IMG")
    assert frame.shape == (6, 8, 3)
    np.testing.assert_array_equal(frame[..., 0], LINEAR_12)
    np.testing.assert_array_equal(frame[..., 1], 255 - LINEAR_12)


def test_a_lying_label_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "lies.IMG"
    write_pds3(path, WORDS, extra_lines=3, header=VICAR)
    with pytest.raises(FrameError, match=r"lies\.IMG.*declares .* image bytes .* file holds") as err:
        read_frame(path)
    assert "\n" not in str(err.value)
    write_pds3(tmp_path / "gone.LBL", WORDS, pointer="detached")
    (tmp_path / "gone.IMG").unlink()
    with pytest.raises(FrameError, match=r"gone\.LBL points to a data file"):
        read_frame(tmp_path / "gone.LBL")


PDS4_TYPES = {"UnsignedByte": "u1", "UnsignedMSB2": ">u2", "UnsignedLSB2": "<u2", "SignedMSB2": ">i2"}


def pds4_label(shape: tuple[int, ...], data_name: str, data_type: str = "UnsignedMSB2", offset: int = 0,
               specials: str = "", bits: int = 12, bit_mask: str | None = None, identifier: str = "t",
               extra_lines: int = 0) -> str:
    """A PDS4 Product_Observational label of a raw image (PDS4 Information Model: Array_2D_Image, or
    Array_3D_Image with a Band axis; img:sample_bits as M2020/MSL labels declare)."""
    axes = [("Line", shape[-2] + extra_lines), ("Sample", shape[-1])]
    if len(shape) == 3:
        axes.insert(0, ("Band", shape[0]))
    kind = f"Array_{len(axes)}D_Image"
    axis_xml = "".join(
        f"<Axis_Array><axis_name>{n}</axis_name><elements>{e}</elements>"
        f"<sequence_number>{i + 1}</sequence_number></Axis_Array>"
        for i, (n, e) in enumerate(axes)
    )
    special_xml = f"<Special_Constants>{specials}</Special_Constants>" if specials else ""
    mask_xml = f"<img:sample_bit_mask>{bit_mask}</img:sample_bit_mask>" if bit_mask else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Product_Observational xmlns="http://pds.nasa.gov/pds4/pds/v1" xmlns:img="http://pds.nasa.gov/pds4/img/v1">
  <Identification_Area>
    <logical_identifier>urn:nasa:pds:marsedge:test:{identifier}</logical_identifier>
    <version_id>1.0</version_id><title>t</title>
    <information_model_version>1.15.0.0</information_model_version>
    <product_class>Product_Observational</product_class>
  </Identification_Area>
  <Observation_Area><Discipline_Area><img:Imaging><img:Sampling>
    <img:sample_bits>{bits}</img:sample_bits>{mask_xml}
  </img:Sampling></img:Imaging></Discipline_Area></Observation_Area>
  <File_Area_Observational>
    <File><file_name>{data_name}</file_name></File>
    <{kind}>
      <local_identifier>image</local_identifier><offset unit="byte">{offset}</offset><axes>{len(axes)}</axes>
      <axis_index_order>Last Index Fastest</axis_index_order>
      <Element_Array><data_type>{data_type}</data_type></Element_Array>
      {axis_xml}{special_xml}
    </{kind}>
  </File_Area_Observational>
</Product_Observational>
"""


def write_pds4(xml_path, samples: np.ndarray, data_type="UnsignedMSB2", offset=0, specials="", bits=12,
               extra_lines=0, bit_mask=None, data_suffix=".dat") -> None:
    """The label at `xml_path` and its raw data file beside it."""
    data = xml_path.with_suffix(data_suffix)
    data.write_bytes(b"\x01" * offset + samples.astype(PDS4_TYPES[data_type]).tobytes())
    xml_path.write_text(pds4_label(samples.shape, data.name, data_type, offset, specials, bits, bit_mask,
                                   xml_path.stem.lower(), extra_lines))


@pytest.mark.parametrize("data_type", ["UnsignedMSB2", "UnsignedLSB2", "SignedMSB2"])
def test_pds4_2d_element_types_and_offset(tmp_path, data_type):
    xml = tmp_path / "NLF_0009.xml"
    write_pds4(xml, WORDS, data_type=data_type, offset=512)
    np.testing.assert_array_equal(read_frame(xml), LINEAR_12)
    assert list_frames(tmp_path) == [xml]


def test_pds4_8_bit_and_3d_colour(tmp_path):
    write_pds4(tmp_path / "u8.xml", (WORDS % 256).astype(np.uint8), data_type="UnsignedByte", bits=8)
    np.testing.assert_array_equal(read_frame(tmp_path / "u8.xml"), WORDS % 256)
    cube = np.stack([WORDS, 4095 - WORDS, WORDS // 2])
    write_pds4(tmp_path / "rgb.xml", cube, offset=100)
    frame = read_frame(tmp_path / "rgb.xml")
    assert frame.shape == (6, 8, 3)
    np.testing.assert_array_equal(frame[..., 1], 255 - LINEAR_12)


def test_pds4_special_constants_become_zero_with_a_mask(tmp_path):
    words = WORDS.copy()
    words[1, 1], words[2, 2] = 4094, 1
    xml = tmp_path / "special.xml"
    write_pds4(
        xml, words, specials="<missing_constant>4094</missing_constant><invalid_constant>1</invalid_constant>"
    )
    image = read_pds_product(xml)
    assert (
        image.invalid is not None and image.invalid.sum() == 2 and image.invalid[1, 1] and image.invalid[2, 2]
    )
    assert image.array[1, 1] == 0 and image.array[2, 2] == 0 and image.array[0, 0] == 4095


def test_pds4_label_larger_than_its_file_is_refused(tmp_path):
    xml = tmp_path / "lies.xml"
    write_pds4(xml, WORDS, extra_lines=2)
    with pytest.raises(FrameError, match=r"lies\.xml declares .* file holds"):
        read_frame(xml)


def test_a_label_declaring_more_bits_than_its_samples_is_refused(tmp_path):
    """A fuzzed PDS4 label with sample_bits 2**31 hung the 8-bit scaling; any depth beyond the
    sample width is a lie and is refused."""
    from marsedge.data.readers import scale_to_uint8

    with pytest.raises(FrameError, match="2147483648 significant bits"):
        scale_to_uint8(np.zeros((2, 2), np.uint16), 2**31)
    assert scale_to_uint8(np.full((1, 1), 4095, np.uint16), 12)[0, 0] == 255
