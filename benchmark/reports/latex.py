"""LaTeX (booktabs) rendering of the report's tables through pandas' ``Styler.to_latex``.

The numbers, bold / underline marks, significance markers and footnotes are those of the Markdown
rendering (:class:`benchmark.reports.tables.Grid`); only the markup differs. Needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import re

import pandas as pd

from benchmark.reports.tables import Grid

#: Markdown marker → LaTeX (math-mode superscripts need no extra package).
MARKERS_TEX = {"†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$", "⇑": r"$^{\Uparrow}$", "↑": r"$^{\uparrow}$"}
_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_UNICODE = {"±": r"$\pm$", "–": "--", "✓": r"\checkmark", "×": r"$\times$", "Σ": r"$\Sigma$",
            "Δ": r"$\Delta$", "α": r"$\alpha$", "…": r"\ldots{}", "≥": r"$\geq$", "—": "---"}


def escape(text: str) -> str:
    """Text → LaTeX: the special characters escaped, the few non-ASCII symbols used here mapped."""
    out = "".join(_SPECIAL.get(ch, ch) for ch in text)
    for k, v in {**_UNICODE, **MARKERS_TEX}.items():
        out = out.replace(k, v)
    return out


def _caption(markdown: str) -> str:
    plain = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", escape(markdown.replace("<ins>underlined</ins>", "UNDERLINED")))
    plain = plain.replace("UNDERLINED", r"\underline{underlined}").replace("`", "")
    return re.sub(r"\\textbf\{Table (\d+)\.\}\s*", "", plain)


def to_latex(grid: Grid, label: str) -> str:
    """``table`` environment with a booktabs ``tabular`` of ``grid``, caption and footnotes."""
    body = [[escape(c.text) + escape(c.marker) + (rf"\textsuperscript{{{c.footnote}}}" if c.footnote else "")
             for c in row] for row in grid.rows]
    frame = pd.DataFrame(body, columns=[escape(h) for h in grid.header])
    marks = pd.DataFrame([[c.mark for c in row] for row in grid.rows], columns=frame.columns)
    styles = marks.replace({"best": "textbf:--rwrap;", "second": "underline:--rwrap;"})
    styler = frame.style.hide(axis="index").apply(lambda _: styles, axis=None)
    caption = _caption(grid.caption)
    if grid.footnotes:
        caption += " " + " ".join(rf"\textsuperscript{{{n.split(':', 1)[0]}}}{escape(n.split(':', 1)[1])}"
                                  for n in grid.footnotes)
    return styler.to_latex(
        hrules=True,
        column_format="l" * grid.n_left + "r" * (len(grid.header) - grid.n_left),
        caption=caption,
        label=label,
        position="t",
        environment="table*",
    )
