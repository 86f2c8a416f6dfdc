"""MIMIC-CXR report section parser: the creators' rules on synthetic reports in the raw byte layout."""

from __future__ import annotations

import pytest

from harness.data.reports import normalize_section_name, parse_report, read_report
from harness.data.schema import DataError


def raw(*lines: str) -> str:
    """A report as stored: centred title, every line with one leading space, blank lines a single space."""
    return "                                 FINAL REPORT\n" + "".join(f" {line}\n" for line in lines)


STANDARD = raw(
    "EXAMINATION:  CHEST (PA AND LAT)", "",
    "INDICATION:  ___ year old man with cough  // r/o pneumonia", "",
    "TECHNIQUE:  Chest PA and lateral", "",
    "COMPARISON:  ___", "",
    "FINDINGS: ", "",
    "Lungs are clear without focal consolidation.  No pleural effusion or",
    "pneumothorax.  Heart size is normal.", "",
    "IMPRESSION: ", "",
    "No acute cardiopulmonary process.",
)


def test_standard_report_sections():
    r = parse_report(STANDARD)
    assert r.indication == "___ year old man with cough // r/o pneumonia"
    assert r.findings == ("Lungs are clear without focal consolidation. No pleural effusion or "
                          "pneumothorax. Heart size is normal.")
    assert r.impression == "No acute cardiopulmonary process."
    assert [n for n, _ in r.ordered] == ["preamble", "examination", "indication", "technique", "comparison",
                                         "findings", "impression"]
    assert r.sections["examination"] == "CHEST (PA AND LAT)"
    assert r.conclusion == r.impression


def test_colon_inside_body_line_is_not_a_header():
    # The body on the header line holds "NOTE: ..." -- rule 2 searches only after that line.
    r = parse_report(raw("INDICATION:  cough. NOTE: see prior", "", "IMPRESSION: ", "", "Clear."))
    assert r.indication == "cough. NOTE: see prior"
    assert r.impression == "Clear."


@pytest.mark.parametrize(("header", "name"), [
    ("IMPRESSON", "impression"), ("FINDNGS", "findings"), ("FINDINGS AND IMPRESSION", "impression"),
    ("CONCLUSION", "impression"), ("CLINICAL HISTORY", "history"), ("HISTORY", "history"),
    ("REASON FOR EXAMINATION", "indication"), ("COMPARISONS", "comparison"), ("WET READ", "wet read"),
    ("PA AND LATERAL VIEWS OF THE CHEST", "findings"), ("FINAL IMPRESSION", "impression"),
    ("NDICATION", "indication"), ("RECOMMENDATION(S)", "recommendations"), ("ODD HEADER", "odd header"),
])
def test_header_variants_and_typos(header, name):
    assert normalize_section_name(f"  {header} ") == name


def test_typo_headers_feed_the_fields():
    r = parse_report(raw("CLINICAL HISTORY:  fever.", "", "FINDNGS: ", "", "Small effusion.", "",
                         "IMPRESSON: ", "", "Effusion."))
    assert (r.indication, r.findings, r.impression) == ("fever.", "Small effusion.", "Effusion.")


def test_reason_for_examination_is_the_indication_and_indication_wins_over_history():
    r = parse_report(raw("REASON FOR EXAMINATION:  chest pain.", "", "IMPRESSION: ", "", "Normal."))
    assert r.indication == "chest pain."
    r = parse_report(raw("HISTORY:  old.", "", "INDICATION:  new.", "", "IMPRESSION: ", "", "Normal."))
    assert r.indication == "new."


def test_findings_only_report():
    r = parse_report(raw("INDICATION:  dyspnea.", "", "FINDINGS: ", "", "Mild cardiomegaly."))
    assert r.findings == "Mild cardiomegaly."
    assert r.impression == ""
    assert "last_paragraph" not in r.sections
    assert r.conclusion == "Mild cardiomegaly."


def test_neither_findings_nor_impression_uses_the_creators_last_paragraph():
    r = parse_report(raw("INDICATION:  Shortness of breath.", "", "COMPARISON:  None.", "",
                         "PA and lateral views of the chest demonstrate clear lungs.", "",
                         "No effusion.  No pneumothorax."))
    assert r.sections["comparison"] == "None."
    # "last_paragraph" is everything after the last section's first paragraph (creators' behaviour)
    assert r.impression == ("PA and lateral views of the chest demonstrate clear lungs. "
                            "No effusion. No pneumothorax.")
    assert r.findings == ""


def test_no_header_at_all():
    r = parse_report(raw("Heart normal.", "", "Lungs clear."))
    assert r.sections["full report"] == "Heart normal."
    assert r.impression == "Lungs clear."


def test_empty_findings_title_line_is_dropped():
    # "CHEST, PA LATERAL:" is a title, normalised to findings but empty -> removed (rule 4)
    r = parse_report(raw("CHEST, PA LATERAL:", "", "INDICATION:  cough.", "", "IMPRESSION: ", "", "Clear."))
    assert "findings" not in r.sections
    assert r.indication == "cough."


def test_wet_read_before_underscores_is_kept_apart():
    text = (" WET READ: ___ ___ 9:48 PM\n  Possible small right pleural effusion.  IMPRESSION: wet\n"
            " " + "_" * 78 + "\n" + raw("INDICATION:  dyspnea.", "", "FINDINGS: ", "", "No effusion."))
    r = parse_report(text)
    assert r.findings == "No effusion."
    assert r.impression == ""  # the wet read's text never becomes the final impression
    assert r.sections["preliminary"].startswith("WET READ: ___ ___ 9:48 PM Possible small right")
    assert "_" * 10 not in r.sections["preliminary"]


def test_addendum_and_underscores_without_title():
    text = (" ADDENDUM:  Findings called to Dr. ___.\n " + "_" * 60
            + "\n INDICATION:  fall.\n \n IMPRESSION: \n \n Rib fracture.\n")
    r = parse_report(text)
    assert r.impression == "Rib fracture."
    assert r.sections["preliminary"] == "ADDENDUM: Findings called to Dr. ___."


def test_repeated_section_last_wins_and_crlf():
    text = raw("IMPRESSION: ", "", "First.", "", "IMPRESSION: ", "", "Second.").replace("\n", "\r\n")
    r = parse_report(text)
    assert r.impression == "Second."
    assert [n for n, _ in r.ordered].count("impression") == 2


def test_read_report_utf8_and_non_utf8(tmp_path):
    good = tmp_path / "s50000001.txt"
    good.write_bytes(STANDARD.encode("ascii"))
    assert read_report(good).impression == "No acute cardiopulmonary process."
    bad = tmp_path / "s50000002.txt"
    bad.write_bytes(STANDARD.encode("ascii")[:60] + b"\xff\xfe" + STANDARD.encode("ascii")[60:])
    with pytest.raises(DataError, match=r"s50000002\.txt: byte 60: encoding: not valid UTF-8"):
        read_report(bad)
    with pytest.raises(FileNotFoundError):
        read_report(tmp_path / "absent.txt")
