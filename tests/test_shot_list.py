"""The pure side of the exports: records, rates and timecode, and the OTIO/EDL/CSV writers at awkward frame rates."""

import csv
from fractions import Fraction

import opentimelineio as otio
import pytest

from backend.exports.shot_list import ShotRecord, frame_rate, record_ranges, timecode, write_shot_list_csv
from backend.exports.timeline import write_edl, write_otio

RECORDS = [ShotRecord("SH010 wide", 1001, 1048, lens_mm=35.0), ShotRecord("SH020 – close", 1049, 1120, lens_mm=85,
                                                                          lens_end_mm=50)]


def test_blender_rates_become_exact_fractions_and_timecode_counts_at_the_rounded_rate():
    assert frame_rate(24) == 24 and frame_rate(24, 1.001) == Fraction(24000, 1001)
    assert frame_rate(30, 1.001) == Fraction(30000, 1001) and frame_rate(50, 2.0) == 25
    assert timecode(0, Fraction(24)) == "00:00:00:00"
    assert timecode(24 * 3600 + 24 * 61 + 5, Fraction(24)) == "01:01:01:05"
    assert timecode(25, frame_rate(24, 1.001)) == "00:00:01:01"  # NDF 23.976 counts 24 frames a second
    with pytest.raises(ValueError, match="negative"):
        timecode(-1, Fraction(24))
    assert record_ranges(RECORDS, Fraction(24)) == [(0, 48), (48, 120)]
    assert RECORDS[0].lens == "35 mm" and RECORDS[1].lens == "85 -> 50 mm"


@pytest.mark.parametrize("rate", [Fraction(24), Fraction(25), Fraction(24000, 1001), Fraction(30000, 1001)])
def test_otio_and_edl_round_trip_at_broadcast_rates(rate, tmp_path):
    write_otio(RECORDS, rate, "Board", tmp_path / "b.otio")
    write_edl(RECORDS, rate, "Board", tmp_path / "b.edl")
    timeline = otio.adapters.read_from_file(str(tmp_path / "b.otio"))
    edl = otio.adapters.read_from_file(str(tmp_path / "b.edl"), adapter_name="cmx_3600", rate=float(rate))
    for read in (timeline, edl):
        clips = list(read.find_clips())
        assert [c.name for c in clips] == ["SH010 wide", "SH020 – close"]
        assert [round(c.source_range.start_time.to_frames()) for c in clips] == [1001, 1049]
        assert [round(c.source_range.duration.to_frames()) for c in clips] == [48, 72]
        assert [round(c.range_in_parent().start_time.to_frames()) for c in clips] == [0, 48]


def test_shot_list_csv_quotes_what_needs_quoting(tmp_path):
    record = ShotRecord('Shot "1", take 2', 1, 10, prompt="line one\nline two, with a comma", notes="über")
    path = write_shot_list_csv([record], Fraction(25), tmp_path / "list.csv")
    with path.open(newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert row["shot"] == 'Shot "1", take 2' and row["prompt"] == "line one\nline two, with a comma"
    assert (row["notes"], row["source_tc_in"], row["source_tc_out"], row["seconds"]) == (
        "über", "00:00:00:01", "00:00:00:11", "0.400")
