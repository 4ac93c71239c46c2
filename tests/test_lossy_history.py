"""A synthetic series made from lossy-compressed inputs says so (Lossy Image Compression
"01", the method, the ratio where the source gives it, the Derivation Description), in
both output forms, signed, and passing dciodvfy; one made from inputs of unknown history
claims nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit
from synthesis import synthetic_series

from dicom_node.dicom.lossy import LossyHistory, lossy_history
from dicom_node.evidence.keys import Signer, create_self_signed
from dicom_node.evidence.verify import verify_file
from dicom_node.synthesize.label import Marking
from factories import StudySpec, axial_series, enhanced_mr, ramp_pixels, write_series
from peers import dciodvfy_errors

SLICES = 4


def _header(syntax: str | None = None, **attributes: object) -> Dataset:
    ds = Dataset()
    if syntax is not None:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _series(folder: Path, compress: str | None, **attributes: object) -> tuple[list[Path], str]:
    """A T1 series written as is, or compressed to JPEG 2000 by pydicom — which marks
    nothing — with ``attributes`` set as a compressing PACS would set them."""
    series = axial_series(StudySpec(), ramp_pixels(SLICES, 64, 64), spacing=(3.0, 1.0, 1.0))
    for ds in series:
        if compress == "lossy":
            ds.compress(JPEG2000, j2k_cr=[20])
        elif compress == "lossless":
            ds.compress(JPEG2000Lossless)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return write_series(series, folder), str(series[0].SeriesInstanceUID)


def _derivations(ds: Dataset) -> list[str]:
    """Every Derivation Description in the object: top level in a classic instance, in
    the functional groups of a multi-frame one."""
    return [str(e.value) for e in ds.iterall() if e.keyword == "DerivationDescription"]


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    folder = tmp_path_factory.mktemp("keys")
    create_self_signed(folder / "k.key", folder / "k.crt", "lossy history tests")
    return Signer.from_files(folder / "k.key", folder / "k.crt")


def test_a_stated_lossy_source_passes_its_method_and_ratio_on() -> None:
    stated = _header(
        None,
        LossyImageCompression="01",
        LossyImageCompressionMethod="ISO_15444_1",
        LossyImageCompressionRatio=20,
    )
    assert lossy_history([stated, _header(None, LossyImageCompression="00")]) == LossyHistory(
        "01", ("ISO_15444_1",), ("20",)
    )


def test_a_lossy_transfer_syntax_counts_even_where_the_header_is_silent() -> None:
    assert lossy_history([_header(JPEGBaseline8Bit)]) == LossyHistory("01", ("ISO_10918_1",))


def test_only_sources_that_all_say_never_lossy_give_00_and_silence_gives_nothing() -> None:
    never = _header(None, LossyImageCompression="00")
    assert lossy_history([never, never]) == LossyHistory("00")
    assert lossy_history([never, _header(None)]) is None
    assert lossy_history([]) is None


def test_jpeg_2000_is_lossy_when_its_code_stream_uses_the_irreversible_wavelet(
    tmp_path: Path,
) -> None:
    lossy, _ = _series(tmp_path / "lossy", "lossy")
    lossless, _ = _series(tmp_path / "lossless", "lossless")
    assert lossy_history(pydicom.dcmread(p) for p in lossy) == LossyHistory("01", ("ISO_15444_1",))
    assert lossy_history(pydicom.dcmread(p) for p in lossless) is None


def test_a_multi_frame_source_compressed_lossy_unstated_is_found_by_its_code_stream(
    tmp_path: Path,
) -> None:
    """An Enhanced MR compressed to JPEG 2000 at 20:1 by a sender that set nothing: each
    frame's header lacks the Pixel Data the code stream is in, so the split states what
    the object's code stream implies, and the output says "01"; the same object
    compressed reversibly claims nothing."""
    classic = axial_series(StudySpec(), ramp_pixels(SLICES, 64, 64), spacing=(3.0, 1.0, 1.0))
    outputs = {}
    compressions = (("lossy", JPEG2000, {"j2k_cr": [20]}), ("lossless", JPEG2000Lossless, {}))
    for kind, syntax, options in compressions:
        enhanced = enhanced_mr(classic)
        enhanced.compress(syntax, **options)
        assert "LossyImageCompression" not in enhanced
        path = tmp_path / f"{kind}.dcm"
        enhanced.save_as(path, enforce_file_format=True)
        outputs[kind] = synthetic_series([path], str(enhanced.SeriesInstanceUID))
    assert all(ds.LossyImageCompression == "01" for ds in outputs["lossy"])
    assert all(ds.LossyImageCompressionMethod == "ISO_15444_1" for ds in outputs["lossy"])
    assert not any("LossyImageCompression" in ds for ds in outputs["lossless"])


@pytest.mark.parametrize("output_format", ["classic", "enhanced"])
def test_an_output_from_lossy_input_says_so_signed_and_valid(
    tmp_path: Path, signer: Signer, output_format: str
) -> None:
    paths, uid = _series(
        tmp_path / "t1",
        "lossy",
        LossyImageCompression="01",
        LossyImageCompressionMethod="ISO_15444_1",
        LossyImageCompressionRatio=20,
    )
    outputs = synthetic_series(
        paths,
        uid,
        marking=Marking(signer=signer),
        output_format=output_format,
        now=datetime.now(UTC),
    )
    for k, ds in enumerate(outputs):
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == "ISO_15444_1"
        assert float(ds.LossyImageCompressionRatio) == 20.0
        said = "from lossy-compressed input (ISO_15444_1, ratio 20:1)"
        assert all(said in text for text in _derivations(ds)) and _derivations(ds)
        path = tmp_path / f"out{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        assert verify_file(path).signature == "valid"
        ds.LossyImageCompression = "00"
        ds.save_as(path, enforce_file_format=True)
        assert verify_file(path).signature == "invalid"  # signed: it cannot be reset unseen


def test_an_output_from_inputs_of_unknown_history_claims_nothing(tmp_path: Path) -> None:
    paths, uid = _series(tmp_path / "t1", None)
    for ds in synthetic_series(paths, uid):
        assert "LossyImageCompression" not in ds
        assert not any("lossy" in text for text in _derivations(ds))
