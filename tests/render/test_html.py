import math

import pytest

from agnostic_saliency.render.html import embedded_png, number, render_report


@pytest.mark.parametrize("value,expected", [(None, "–"), (True, "yes"), (False, "no"), (0.12345, "0.123"),
                                            (math.nan, "NaN"), (7, "7"), ("text", "text")])
def test_number_formats_table_cells(value, expected):
    assert number(value) == expected


def test_number_takes_the_digits():
    assert number(2.0, 1) == "2.0"


def test_embedded_png_is_a_data_uri_of_the_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG-bytes")
    assert embedded_png(path) == "data:image/png;base64,iVBORy1ieXRlcw=="


def test_a_missing_field_is_an_error_not_an_empty_cell(tmp_path):
    with pytest.raises(Exception, match="summary"):
        render_report("scan.html.j2", tmp_path / "report.html", title="t", version="0")
    assert not (tmp_path / "report.html").exists()
