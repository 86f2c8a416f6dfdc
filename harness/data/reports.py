"""Section parser for MIMIC-CXR free-text reports (``files/pNN/pSUBJECT/sSTUDY.txt``).

It keeps the semantics of the dataset creators' ``txt/section_parser.py``
(MIT-LCP/mimic-cxr), which also produced the text the CheXpert/NegBio labels
were computed from:

1. A section header is an upper-case phrase followed by a colon at the start of
   a line. Raw MIMIC lines start with one space, hence the creators' pattern
   ``\\n ([A-Z ()/,-]+):\\s``. Text before the first header is the ``preamble``;
   a report with no header at all is one ``full report`` section.
2. The next header is searched for only after the end of the current header's
   line, so a body on the header line (``INDICATION:  ___ year old man ...``)
   is never split by a colon inside it.
3. Header names are lower-cased and normalised: frequent variants map to one name
   (``CLINICAL HISTORY`` -> ``history``, ``REASON FOR EXAMINATION`` ->
   ``indication``, ``CONCLUSION`` / ``FINDINGS AND IMPRESSION`` -> ``impression``)
   and so do the typos seen in the corpus (``IMPRESSON``, ``FINDNGS``, ...);
   then any name containing ``impression`` / ``findings`` / ``history`` /
   ``comparison`` / ``addendum`` takes that name, and view-like names
   (``PA AND LATERAL VIEWS OF THE CHEST``) become ``findings``.
4. Empty ``findings`` / ``impression`` sections are dropped (title-like lines
   such as ``CHEST, PA LATERAL:`` followed directly by the next header).
5. A report with neither findings nor impression gets a ``last_paragraph``
   section: the text of its last section after that section's first paragraph
   (blank line). The creators' code calls it "last paragraph" although it keeps
   every paragraph after the first; we keep their behaviour and their name.
6. Where a name repeats, the LAST occurrence wins (the creators' ``list_rindex``).

Two deliberate differences, both documented here:

* A preliminary read (``WET READ:``, ``(PFI)``) and/or addendum printed before
  the final report (separated by a full line of underscores, then the centred
  ``FINAL REPORT`` title) is split off first and kept as the ``preliminary``
  section; only the final report feeds indication / findings / impression. The
  creators' parser would let a wet read's header win when the final report lacks
  that section.
* Section text has its whitespace collapsed to single spaces (the reports are
  hard-wrapped at 79 characters, so line breaks carry no meaning), and the typo
  ``NDICATION`` maps to ``indication`` (the creators map it to ``impression``).

Encoding: MIMIC-CXR reports are ASCII. :func:`read_report` therefore treats any
non-UTF-8 byte as a corrupt file and raises :class:`DataError` naming the file and
byte offset (re-download / check ``SHA256SUMS.txt``) rather than decoding with
replacement characters, which would silently change the text a model sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.schema import DataError

SECTION_HEADER = re.compile(r"\n ?([A-Z ()/,-]+):\s")
_FINAL_REPORT = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE)
_UNDERSCORE_LINE = re.compile(r"^[ \t]*_{8,}[ \t]*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

# Creators' frequent-name map (counts in their corpus: impression 187,759, ...), typos included.
_SECTION_NAMES = {
    "preamble": "preamble", "impression": "impression", "comparison": "comparison",
    "indication": "indication", "findings": "findings", "examination": "examination",
    "technique": "technique", "history": "history", "comparisons": "comparison",
    "clinical history": "history", "reason for examination": "indication",
    "notification": "notification", "reason for exam": "indication",
    "clinical information": "history", "exam": "examination", "clinical indication": "indication",
    "conclusion": "impression", "chest, two views": "findings", "recommendation(s)": "recommendations",
    "type of examination": "examination", "reference exam": "comparison", "patient history": "history",
    "addendum": "addendum", "comparison exam": "comparison", "date": "date", "comment": "comment",
    "findings and impression": "impression", "wet read": "wet read", "comparison film": "comparison",
    "recommendations": "recommendations", "findings/impression": "impression", "pfi": "history",
    "recommendation": "recommendations", "wetread": "wet read",
    "ndication": "indication",  # the creators map this one typo to impression; it is an indication
    "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    "findings/ impression": "impression", "finding": "findings", "findins": "findings",
    "findindgs": "findings", "findgings": "findings", "findngs": "findings", "findnings": "findings",
    "finidngs": "findings", "idication": "indication", "reference findings": "findings",
    "comparision": "comparison", "comparsion": "comparison", "comparrison": "comparison",
    "comparisions": "comparison",
}
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
_VIEW_LIKE = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views"
    "|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright"
    "|ribs|pa and lat"
)


def normalize_section_name(raw: str) -> str:
    """``"  CLINICAL HISTORY"`` -> ``"history"``, ``"IMPRESSON"`` -> ``"impression"`` (rule 3)."""
    name = raw.lower().strip()
    if name in _SECTION_NAMES:
        return _SECTION_NAMES[name]
    for main in _MAIN_SECTIONS:
        if main in name:
            return main
    return "findings" if _VIEW_LIKE.search(name) else name


@dataclass(frozen=True)
class ReportSections:
    """One report, sectioned.

    Attributes:
        indication: the INDICATION section, else HISTORY (incl. CLINICAL HISTORY, REASON FOR EXAMINATION).
        findings: the FINDINGS section (``""`` if absent).
        impression: the IMPRESSION section; for a report with neither findings nor impression, the
            creators' ``last_paragraph`` (rule 5); else ``""``.
        sections: every normalised section name -> text (last occurrence wins), incl. ``preamble``,
            ``last_paragraph`` and ``preliminary`` (wet read / addendum before the final report).
        ordered: ``(name, text)`` in report order, repeats kept.
    """

    indication: str = ""
    findings: str = ""
    impression: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    ordered: tuple[tuple[str, str], ...] = ()

    @property
    def conclusion(self) -> str:
        """The text the creators labelled: impression > findings > last_paragraph > comparison."""
        for name in ("impression", "findings", "last_paragraph", "comparison"):
            if self.sections.get(name):
                return self.sections[name]
        return ""


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _split_preliminary(text: str) -> tuple[str, str]:
    """(preliminary read / addendum, final report). The final part always starts with a newline."""
    title = _FINAL_REPORT.search(text)
    if title is not None:
        return _UNDERSCORE_LINE.sub(" ", text[: title.start()]), text[title.end():]
    rules = list(_UNDERSCORE_LINE.finditer(text))
    if rules:
        return _UNDERSCORE_LINE.sub(" ", text[: rules[-1].start()]), text[rules[-1].end():]
    return "", "\n" + text


def _section_text(text: str) -> list[tuple[str, str]]:
    """Rules 1-2: raw ``(name, body)`` pairs of ``text`` (which starts with a newline)."""
    header = SECTION_HEADER.search(text)
    if header is None:
        return [("full report", text)]
    parts = [("preamble", text[: header.start()])]
    while header is not None:
        name, start = header.group(1), header.end()
        line_end = text.find("\n", start)
        header = SECTION_HEADER.search(text, line_end if line_end != -1 else len(text))
        parts.append((name, text[start: header.start() if header is not None else len(text)]))
    return parts


def parse_report(text: str) -> ReportSections:
    """Section a MIMIC-CXR report (see the module docstring for the rules).

    Example::

        >>> r = parse_report("  FINAL REPORT\\n INDICATION:  cough\\n \\n"
        ...                  " IMPRESSON: \\n \\n No acute process.\\n")
        >>> (r.indication, r.findings, r.impression)
        ('cough', '', 'No acute process.')
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    preliminary, final = _split_preliminary(text)
    parts = [(normalize_section_name(name) if name not in ("preamble", "full report") else name, body)
             for name, body in _section_text(final)]
    parts = [(n, b) for n, b in parts if not (n in ("impression", "findings") and not b.strip())]  # rule 4
    names = {n for n, _ in parts}
    if "impression" not in names and "findings" not in names:  # rule 5
        last_name, last_body = parts[-1]
        paragraphs = _PARAGRAPH_BREAK.split(last_body.strip("\n"), maxsplit=1)
        if len(paragraphs) == 2:
            parts[-1] = (last_name, paragraphs[0])
            parts.append(("last_paragraph", paragraphs[1]))
    ordered = tuple((n, _collapse(b)) for n, b in parts)
    if preliminary.strip():
        ordered = (("preliminary", _collapse(preliminary)), *ordered)
    sections = dict(ordered)  # later occurrences overwrite earlier ones (rule 6)
    impression = sections.get("impression", "")
    if not impression and "findings" not in sections:
        impression = sections.get("last_paragraph", "")
    return ReportSections(
        indication=sections.get("indication") or sections.get("history", ""),
        findings=sections.get("findings", ""),
        impression=impression,
        sections=sections,
        ordered=ordered,
    )


def read_report(path: Path) -> ReportSections:
    """Read and section one report file.

    Raises:
        FileNotFoundError: no such file (adapters count this as ``report missing``).
        DataError: the file is not valid UTF-8 (names the file and the first bad byte).
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: byte {err.start}: encoding: not valid UTF-8 ({err.reason}); "
                        "MIMIC-CXR reports are ASCII, the file is probably corrupt") from err
    return parse_report(text)
