"""The storyboard as a PDF for reading on paper: three shots a page, each a row of key frames and its facts.

Pages are A4 or US Letter, landscape. A shot's key frames are its generated clip's first, middle and last frames (or
its passes when it has none, ``board.key_frames``); beside them: name, frames and duration, size, angle, lens,
move, prompt and notes. Text is set in DejaVu Sans when the system has it (every script the artist may type), else
in the PDF's own Helvetica with characters outside Latin-1 replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from backend.exports.shot_list import ShotRecord, timecode

PAGE_FORMATS = ("A4", "Letter")
SHOTS_PER_PAGE = 3
KEY_FRAMES_PER_SHOT = 3
LINE_MM = 4.4
FONT_FOLDERS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/Library/Fonts",
                "C:/Windows/Fonts")


def _unicode_font() -> Path | None:
    for folder in FONT_FOLDERS:
        path = Path(folder) / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return None


def write_storyboard_pdf(records: Sequence[ShotRecord], rate: Fraction, title: str, path: str | Path,
                         page_format: str = "A4") -> Path:
    """Write the board to ``path``; returns it. ``page_format`` is "A4" or "Letter"."""
    try:
        from fpdf import FPDF
    except ImportError as error:
        raise RuntimeError("storyboard PDF export needs fpdf2: pip install fpdf2") from error
    if page_format not in PAGE_FORMATS:
        raise ValueError(f"page format {page_format!r}: expected one of {', '.join(PAGE_FORMATS)}")

    pdf = FPDF(orientation="landscape", unit="mm", format=page_format.lower())
    pdf.set_auto_page_break(False)
    pdf.set_title(title)
    pdf.set_creator("CinePreGen")
    font = _unicode_font()
    if font is not None:
        pdf.add_font("DejaVu", "", str(font))
        family = "DejaVu"
    else:
        family = "Helvetica"

    def text(value: str) -> str:
        return value if font is not None else value.encode("latin-1", "replace").decode("latin-1")

    margin = 12.0
    width, height = pdf.w - 2 * margin, pdf.h - 2 * margin
    header = 10.0
    row_height = (height - header) / SHOTS_PER_PAGE
    frame_width = width * 0.62 / KEY_FRAMES_PER_SHOT
    pages = max(1, -(-len(records) // SHOTS_PER_PAGE))
    for page in range(pages):
        pdf.add_page()
        pdf.set_font(family, size=13)
        pdf.set_xy(margin, margin)
        pdf.cell(width * 0.7, 7, text(title))
        pdf.set_font(family, size=9)
        pdf.cell(width * 0.3, 7, f"page {page + 1} of {pages}", align="R")
        for slot, record in enumerate(records[page * SHOTS_PER_PAGE:(page + 1) * SHOTS_PER_PAGE]):
            top = margin + header + slot * row_height
            pdf.set_draw_color(180)
            pdf.line(margin, top, margin + width, top)
            frame_height = min(row_height - 8, frame_width * 9 / 16)
            for k, image in enumerate(record.key_frames[:KEY_FRAMES_PER_SHOT]):
                pdf.image(str(image), x=margin + k * frame_width + 1, y=top + 3, w=frame_width - 2,
                          h=frame_height, keep_aspect_ratio=True)
            _shot_facts(pdf, family, text, record, rate, margin + KEY_FRAMES_PER_SHOT * frame_width + 4, top + 3,
                        width - KEY_FRAMES_PER_SHOT * frame_width - 4, row_height - 6)
    pdf.output(str(path))
    return Path(path)


def _shot_facts(pdf, family: str, text, record: ShotRecord, rate: Fraction, x: float, y: float, w: float,
                h: float) -> None:
    seconds = float(record.frames / rate)
    lines = [
        f"{record.frame_start}-{record.frame_end} ({record.frames} frames, {seconds:.2f} s)   "
        f"{timecode(record.frame_start, rate)}",
        f"{record.size}, {record.angle}, {record.lens}",
        f"Move: {record.move or 'static'}",
    ]
    if record.prompt:
        lines.append(f"Prompt: {record.prompt}")
    if record.notes:
        lines.append(f"Notes: {record.notes}")
    if not record.clip_path:
        lines.append(f"(not generated yet: {record.key_frame_source or 'no pictures'} shown)")
    pdf.set_xy(x, y)
    pdf.set_font(family, size=12)
    pdf.cell(w, 6, text(record.name), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    pdf.set_xy(x, y + 7)
    wrapped = pdf.multi_cell(w, LINE_MM, text("\n".join(lines)), dry_run=True, output="LINES")
    room = int((h - 7) // LINE_MM)
    if len(wrapped) > room:  # a very long prompt ends at the row's foot; the shot list has it whole
        wrapped = wrapped[:room - 1] + [text("... (the rest is in the shot list)")]
    pdf.multi_cell(w, LINE_MM, "\n".join(wrapped))
