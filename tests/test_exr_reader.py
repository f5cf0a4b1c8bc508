"""The EXR reader against OpenEXR itself, on the layouts Blender 4.5 (one part) and 5.x (a part per pass) write."""

import numpy as np
import pytest

from cinepregen_addon.core.exr_reader import read_exr_channels


@pytest.mark.parametrize("multipart", [False, True])
def test_exr_reader_matches_openexr(tmp_path, multipart):
    """Blender's Python has no OpenEXR package; our reader must agree with it on the layouts of 4.5 and 5.x."""
    import OpenEXR

    rng = np.random.default_rng(0)
    channels = {"L.Depth.Z": rng.random((5, 7), dtype=np.float32), "L.Index.X": rng.integers(0, 9, (5, 7), np.uint32),
                "L.Normal.X": rng.random((5, 7)).astype(np.float16)}
    header = {"compression": OpenEXR.NO_COMPRESSION, "type": OpenEXR.scanlineimage}
    path = tmp_path / "passes.exr"
    if multipart:
        parts = [OpenEXR.Part(dict(header), {name: pixels}, name=name.rpartition(".")[0])
                 for name, pixels in channels.items()]
        with OpenEXR.File(parts) as exr:
            exr.write(str(path))
    else:
        with OpenEXR.File(header, dict(channels)) as exr:  # OpenEXR replaces the dict's arrays by Channels
            exr.write(str(path))
    read = read_exr_channels(path)
    assert sorted(read) == sorted(channels)
    for name, pixels in channels.items():
        assert read[name].dtype == pixels.dtype and np.array_equal(read[name], pixels)
    header["compression"] = OpenEXR.ZIP_COMPRESSION
    with OpenEXR.File(header, dict(channels)) as exr:
        exr.write(str(path))
    with pytest.raises(ValueError, match="compressed"):
        read_exr_channels(path)
