"""The storyboard as a PDF for reading on paper: three shots a page, each a row of key frames and its facts.

Pages are A4 or US Letter, landscape. A shot's key frames are its generated clip's first, middle and last frames (or
its passes when it has none, ``board.key_frames``); beside them: name, frames and duration, size, angle, lens,
move, prompt and notes. Text is set in Blender's own fonts when the export runs beside Blender (its interface font,
Inter, and for what it lacks the Noto fonts Blender ships for every other script, CJK and emoji among them: only those
the board's text needs, the CJK one alone takes seconds to read), else in DejaVu Sans when the system has it, else in
the PDF's own Helvetica with characters outside Latin-1 replaced. (DejaVu is on most Linux systems only: on Windows
and macOS a board's Polish, Greek or Japanese notes came out as question marks.)
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


BLENDER_TEXT_FONT = "Inter.woff2"  # Blender's interface font: Latin, Greek, Cyrillic


def font_characters(font: Path) -> set[int]:
    """The code points a font file has glyphs for (TTF, OTF, WOFF2)."""
    from fontTools.ttLib import TTFont  # fpdf2's own font reader

    return set(TTFont(str(font), lazy=True).getBestCmap())


def text_fonts(text: str, font_folder: Path | None = None) -> list[Path]:
    """The font files to set ``text`` in: a main font and, after it, the fallbacks that hold characters it lacks.
    ``font_folder`` is Blender's fonts folder (``bpy.utils.system_resource("DATAFILES", path="fonts")``); without
    it (or its interface font) DejaVu Sans from the system alone; [] when there is neither."""
    main = font_folder / BLENDER_TEXT_FONT if font_folder is not None else None
    if main is None or not main.is_file():
        system = [Path(folder) / "DejaVuSans.ttf" for folder in FONT_FOLDERS]
        return [path for path in system if path.is_file()][:1]
    missing = {ord(c) for c in text if not c.isspace()} - font_characters(main)
    fonts = [main]
    for candidate in sorted(font_folder.glob("Noto*.woff2"), key=lambda f: f.stat().st_size):  # CJK, the largest, last
        if not missing:
            break
        covered = missing & font_characters(candidate)
        if covered:
            fonts.append(candidate)
            missing -= covered
    return fonts


def write_storyboard_pdf(records: Sequence[ShotRecord], rate: Fraction, title: str, path: str | Path,
                         page_format: str = "A4", font_folder: Path | None = None) -> Path:
    """Write the board to ``path``; returns it. ``page_format`` is "A4" or "Letter"; ``font_folder`` Blender's fonts
    (``text_fonts``)."""
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
    written = [title] + [value for r in records for value in (r.name, r.size, r.angle, r.move, r.prompt, r.notes,
                                                               r.key_frame_source)]
    fonts = text_fonts("".join(written), font_folder)
    for i, font in enumerate(fonts):
        pdf.add_font(f"text{i}", "", str(font))
    family = "text0" if fonts else "Helvetica"
    pdf.set_fallback_fonts([f"text{i}" for i in range(1, len(fonts))])

    def text(value: str) -> str:
        return value if fonts else value.encode("latin-1", "replace").decode("latin-1")

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
