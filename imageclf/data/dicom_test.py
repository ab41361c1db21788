"""DICOM files built with pydicom: windowing, rescale, MONOCHROME1, frames, errors, CLI."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from imageclf.cli.testing import exit_code  # noqa: E402
from imageclf.core.errors import BadImageError  # noqa: E402
from imageclf.data import dicom  # noqa: E402
from imageclf.data import synthetic as testing  # noqa: E402
from imageclf.data.dicom import is_dicom  # noqa: E402
from imageclf.data.images import Preprocessing, load_image, open_image  # noqa: E402
from imageclf.data.sources import open_dataset  # noqa: E402


def make_dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", preamble: bool = True,
               **tags) -> bytes:
    """A Secondary Capture DICOM of ``pixels`` ((rows, cols), (frames, rows, cols) or RGB)."""
    pixels = np.asarray(pixels)
    mono = photometric.startswith("MONO")
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    if mono and pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:] if mono else pixels.shape[:2]
    ds.SamplesPerPixel = 1 if mono else 3
    if not mono:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = tags.pop("BitsStored", ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(buf, enforce_file_format=True)
    else:  # a bare dataset: no preamble, no 'DICM', no file meta
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()


RAMP = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 100)  # 0 .. 1500


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(open_image(data))


def test_found_by_content_with_or_without_preamble():
    with_preamble = make_dicom(RAMP)
    bare = make_dicom(RAMP, preamble=False)
    assert with_preamble[128:132] == b"DICM" and b"DICM" not in bare[:200]
    assert is_dicom(with_preamble) and is_dicom(bare)
    assert np.array_equal(pixels(with_preamble), pixels(bare))


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + b"\0" * 200, b"\xff\xd8\xff\xe0" + b"\0" * 200,
                                  b"just text, even 'DICM' somewhere" * 9, b"\x08\x00"])
def test_other_files_are_not_taken_for_dicom(data):
    assert not is_dicom(data)


def test_no_window_uses_min_max_of_16_bit_values():
    out = pixels(make_dicom(RAMP))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.array_equal(out.ravel(), np.rint(np.arange(16) / 15 * 255).astype(np.uint8))


def test_window_center_and_width_linear_as_the_standard_defines():
    out = pixels(make_dicom(RAMP, WindowCenter=750, WindowWidth=501))
    # y = ((x - 749.5) / 500 + 0.5) clipped to [0, 1]: 500 and below black, 1000 and above white.
    x = RAMP.astype(float)
    want = np.rint(np.clip((x - 749.5) / 500 + 0.5, 0, 1) * 255)
    assert np.array_equal(out, want)
    assert out[1, 1] == 0 and out[2, 2] == 255 and out[1, 2] == 51  # 500 -> 0, 1000 -> 255, 600 -> 51


def test_rescale_slope_and_intercept_applied_before_the_window():
    # CT-like: HU = 2 * stored - 1000; a window on HU, not on stored values.
    out = pixels(make_dicom(RAMP, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=500,
                            WindowWidth=1000))
    hu = RAMP * 2.0 - 1000
    want = np.rint(np.clip((hu - 499.5) / 999 + 0.5, 0, 1) * 255)
    assert np.array_equal(out, want)


def test_first_of_several_windows_is_used():
    out = pixels(make_dicom(RAMP, WindowCenter=[750, 100], WindowWidth=[501, 50]))
    assert np.array_equal(out, pixels(make_dicom(RAMP, WindowCenter=750, WindowWidth=501)))


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_other_voi_functions_put_the_centre_at_mid_grey(function):
    out = pixels(make_dicom(RAMP, WindowCenter=700, WindowWidth=400, VOILUTFunction=function))
    assert out[1, 3] == 128  # value 700, the centre
    assert (np.diff(out.ravel().astype(int)) >= 0).all()


def test_monochrome1_is_inverted():
    normal = pixels(make_dicom(RAMP))
    inverted = pixels(make_dicom(RAMP, photometric="MONOCHROME1"))
    assert np.array_equal(inverted, 255 - normal)


def test_signed_12_bit_ct_values():
    ct = (np.arange(16, dtype=np.int16).reshape(4, 4) * 200 - 1024)  # -1024 .. 1976
    out = pixels(make_dicom(ct, BitsStored=12, WindowCenter=40, WindowWidth=400))
    assert out[0, 0] == 0 and out[-1, -1] == 255
    assert out.ravel()[6] == np.rint(np.clip((176 - 39.5) / 399 + 0.5, 0, 1) * 255)


def test_multi_frame_gives_the_first_frame():
    frames = np.stack([RAMP, RAMP[::-1], RAMP * 0])
    assert np.array_equal(pixels(make_dicom(frames)), pixels(make_dicom(RAMP)))


def test_rgb_dicom():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 30
    out = load_image(make_dicom(rgb, photometric="RGB"), Preprocessing(size=(4, 4), channels=3))
    assert (out == [200, 0, 30]).all()


def test_8_bit_dicom_through_load_image_at_model_size():
    img = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    out = load_image(make_dicom(img), Preprocessing(size=(8, 8), channels=1))[..., 0]
    assert np.abs(out.astype(int) - np.rint(img / 252 * 255)).max() <= 1


def test_pixel_count_checked_from_the_header_before_decoding():
    data = make_dicom(RAMP, preamble=True)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = 60_000, 60_000
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(BadImageError, match="60000 x 60000 = 3,600,000,000 pixels, over the limit"):
        open_image(buf.getvalue())



def test_the_callers_pixel_limit_is_checked_before_decoding(monkeypatch):
    data = make_dicom(RAMP, preamble=True)
    h, w = RAMP.shape[:2]
    assert open_image(data, max_pixels=h * w).size == (w, h)

    def no_decoding(ds):
        raise AssertionError("pixels decoded although the header is over the caller's limit")

    monkeypatch.setattr(dicom, "_first_frame", no_decoding)
    with pytest.raises(BadImageError, match=f"over the limit of {h * w - 1:,}"):
        open_image(data, max_pixels=h * w - 1)

def _edited(**tags) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(RAMP)))
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.mark.parametrize("data, reason", [
    (make_dicom(RAMP)[:-10], "malformed DICOM"),                       # pixel data cut short
    (make_dicom(RAMP)[:200], "no pixel data"),                         # cut in the header
    (make_dicom(RAMP)[:132] + b"\xff" * 64, "DICOM"),                  # garbage after the magic
    (_edited(PixelData=None), "no pixel data"),                        # a DICOM that is not an image
    (_edited(Rows=None), "no Rows"),
    (_edited(PhotometricInterpretation="HSV"), "DICOM"),
    (make_dicom(RAMP, RescaleSlope=2, RescaleIntercept=0).replace(b"\x28\x00\x53\x10DS\x04\x002.0 ",
                                               b"\x28\x00\x53\x10DS\x04\x00x.0 "), "malformed DICOM"),
])
def test_malformed_dicom_is_a_clear_bad_image_error(data, reason):
    with pytest.raises(BadImageError, match=reason) as err:
        load_image(data, Preprocessing(size=(4, 4), channels=1))
    assert str(err.value).startswith("<bytes>: ")


def test_without_pydicom_the_message_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(BadImageError, match=r"needs pydicom \(pip install 'imageclf\[dicom\]'\)"):
        load_image(make_dicom(RAMP), Preprocessing(size=(4, 4), channels=1))


# --- datasets and prediction ---------------------------------------------------------------

def _dicom_folders(root, n: int = 16):
    """Class folders of .dcm files: the synthetic discs as 12-bit MONOCHROME2 with a window."""
    images, labels = testing.synthetic_images(n, 16)
    for i, (img, k) in enumerate(zip(images, labels)):
        folder = root / ("NORMAL", "PNEUMONIA")[k]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.dcm").write_bytes(
            make_dicom(img.astype(np.uint16) * 16, BitsStored=12, WindowCenter=2048, WindowWidth=4096))
    return root, images


_run = exit_code


def test_dicom_dataset_trains_and_predicts(tmp_path, capsys):
    data, images = _dicom_folders(tmp_path / "dcm")
    ds = open_dataset(data)
    assert len(ds.splits["all"]) == 16 and all(p.endswith(".dcm") for p in ds.splits["all"].paths)
    # The window spans the 12-bit range, so the decoded pixels are the 8-bit originals.
    first = sorted((data / "NORMAL").iterdir())[0]
    decoded = load_image(first, Preprocessing(size=(16, 16), channels=1))[..., 0]
    assert np.abs(decoded.astype(int) - images[int(first.stem)]).max() <= 1

    assert _run(["train", data, "-o", tmp_path / "run", "-r", "catsdogs-2conv", "--img-size", "16",
                 "--channels", "1", "--epochs", "1", "--batch-size", "8", "--set",
                 "steps_per_epoch=null", "--device", "cpu", "-q"]) == 0
    assert _run(["predict", tmp_path / "run", first, "-q"]) == 0
    out = capsys.readouterr().out
    assert first.name in out and ("NORMAL" in out or "PNEUMONIA" in out)

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(first.read_bytes()[:-20])
    assert _run(["predict", tmp_path / "run", broken, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {broken}: malformed DICOM")

