import re

from robustlaw.report import write_report


def rows():
    out = []
    for i, s in enumerate((1.0, 2.0, 3.0, 4.0)):
        out.append({"key": f"k{i}", "status": "ok", "reached": True, "n": 100, "d": 10, "width": 10 * (i + 1),
                    "P": 100 * (i + 1), "seed": 0, "train_max_err": 0.05, "law_scale": s, "lip_lower": 2 * s,
                    "lip_upper": 3 * s, "grad_mean_train": s, "lip_floor": 1.5})
    out.append({"key": "bad", "status": "error", "error": "RuntimeError: <boom>", "n": 100, "d": 10})
    return out


def test_report_embeds_the_figure_table_exponent_and_failures(tmp_path):
    path = write_report(rows(), tmp_path, title="t")
    page = path.read_text()
    assert page.startswith("<!doctype html>")
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert png and len(png.group(1)) > 1000
    assert (tmp_path / "law.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.500 [0.500, 0.500]" in page  # Lip = 2 sqrt(nd/P): exponent 1/2 in n d / P
    assert page.count("<tr>") == 1 + 4
    assert "RuntimeError: &lt;boom&gt;" in page  # escaped, listed, not dropped


def test_report_with_too_few_runs_says_so(tmp_path):
    page = write_report(rows()[:2], tmp_path).read_text()
    assert "too few fitted runs" in page
