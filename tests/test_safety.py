"""Text from users and models is escaped for where it lands; host details stay off the site."""

from __future__ import annotations

from pathlib import Path

import markdown

from profiler.report.render import environment
from profiler.safety import code, redact, text
from profiler.safety import markdown as trusted

HOSTILE = "a<script>x</script> | [l](javascript:1) *b* `c` &amp;"


def render(source: str) -> str:
    return markdown.markdown(source, extensions=["tables"])


def test_text_cannot_open_elements_links_or_table_cells() -> None:
    html = render(f"| A | B |\n|---|---|\n| {text(HOSTILE)} | 2 |")
    assert "<script" not in html and "<a " not in html and "<em>" not in html
    assert html.count("<td>") == 2  # the pipe stayed inside its cell
    assert "&lt;script&gt;" in html and "[l](javascript:1)" in html and "&amp;amp;" in html


def test_code_spans_keep_their_text_and_cannot_be_left() -> None:
    html = render(f"path {code(HOSTILE)} end")
    assert html.count("<code>") == 1 and "<script" not in html
    assert "&lt;script&gt;" in html and html.rstrip().endswith("end</p>")


def test_templates_escape_everything_unless_a_filter_marks_it_trusted(tmp_path: Path) -> None:
    (tmp_path / "page.j2").write_text(
        '{% macro cell(v) %}| {{ v }} |{% endmacro %}'
        'plain {{ x }}\ncell {{ cell(x) }}\nmd {{ x|md }}\ncode {{ x|code }}\n'
        'joined {{ [x, "y"]|join(", ") }}\n', "utf-8")
    page = environment(tmp_path).get_template("page.j2").render(x=HOSTILE)
    html = markdown.markdown(page, extensions=["tables", "md_in_html"])
    assert "<script" not in html and "<a " not in html  # no element, no link, from any line
    plain, cell, md_line, _, joined = page.splitlines()
    for line in (plain, cell, joined):  # escaped once: for HTML and for Markdown
        assert "&lt;script&gt;" in line and r"\*b\*" in line and r"\|" in line
    assert "*b*" in md_line and "`c`" in md_line and r"\[l\]" in md_line  # Markdown kept
    assert str(trusted("**bold**")) == "**bold**" and "&amp;amp;" in page


def test_redact_shortens_home_and_venv_paths_and_hides_user_and_host() -> None:
    details = [("/home/alice/.venv", "<venv>"), ("/home/alice", "~"), ("alice", "<user>"),
               ("build-box-7", "<host>")]
    data = {"path": "/home/alice/models/m", "venv": "/home/alice/.venv/lib/x.py",
            "os": "Linux build-box-7 6.1", "list": ["alice wrote", "malice", "/home/alicex"],
            "n": 3}
    assert redact(data, details) == {
        "path": "~/models/m", "venv": "<venv>/lib/x.py", "os": "Linux <host> 6.1",
        "list": ["<user> wrote", "malice", "/home/alicex"], "n": 3}
