"""Numbers the CIKM'22 MARLLB paper reports (arXiv 2201.11727), as facts to set our results beside.

Mean JCT in ms (mean ± std over the paper's 5 runs per rate) from its Table 3 (moderate scale, the
Wikipedia test hours, "Wiki" = /wiki/index.php page loads) and Table 7 (large scale, Poisson
CPU-bound jobs), and the work ratios of its Fig. 9/10 (how much more work SED put on the powerful
servers). They were measured on a real testbed with the real Wikipedia trace; our runs are simulated
and their job sizes are our assumption (see each config), so the comparison is of shape and order,
not of absolute values.
"""

from __future__ import annotations

__all__ = ["MODERATE_WIKI_JCT_MS", "LARGE_JCT_MS", "SED_WORK_RATIO", "PAPER", "paper_table_for"]

PAPER = "CIKM'22 MARLLB (arXiv 2201.11727)"

#: Table 3, Wiki pages: policy -> rate (flows/s) -> (mean, std) JCT in ms
MODERATE_WIKI_JCT_MS: dict[str, dict[float, tuple[float, float]]] = {
    "ecmp": {518.8: (529.4, 110.5), 690.9: (3178.9, 615.9), 696.5: (2748.5, 371.1), 796.3: (3018.5, 837.3)},
    "awcmp": {518.8: (140.9, 4.1), 690.9: (430.7, 154.5), 696.5: (348.3, 80.3), 796.3: (539.1, 152.4)},
    "wcmp": {518.8: (92.6, 16.2), 690.9: (443.6, 268.1), 696.5: (530.7, 411.7), 796.3: (466.8, 269.4)},
    "lsq": {518.8: (78.7, 29.9), 690.9: (236.6, 164.4), 696.5: (207.9, 67.6), 796.3: (208.8, 117.5)},
    "sed": {518.8: (67.2, 5.1), 690.9: (189.3, 118.4), 696.5: (182.6, 85.7), 796.3: (150.9, 69.2)},
    "RLB-I-SAC": {518.8: (84.3, 16.9), 690.9: (349.6, 397.8), 696.5: (146.4, 54.7), 796.3: (155.0, 97.0)},
    "RLB-QMix": {518.8: (63.4, 3.9), 690.9: (166.9, 62.3), 696.5: (88.0, 10.4), 796.3: (188.8, 104.7)},
}
#: Table 7: policy -> rate -> (mean, std) JCT in ms
LARGE_JCT_MS: dict[str, dict[float, tuple[float, float]]] = {
    "ecmp": {398.5: (5907.2, 550.1), 419.3: (7841.1, 484.7)},
    "awcmp": {398.5: (467.7, 5.5), 419.3: (595.4, 6.7)},
    "wcmp": {398.5: (629.9, 25.0), 419.3: (1027.5, 65.5)},
    "lsq": {398.5: (332.7, 1.6), 419.3: (420.2, 2.0)},
    "sed": {398.5: (338.6, 0.7), 419.3: (410.3, 2.3)},
    "RLB-I-SAC": {398.5: (344.8, 2.0), 419.3: (425.3, 1.8)},
    "RLB-QMix": {398.5: (340.7, 1.5), 419.3: (419.7, 2.8)},
}
#: Fig. 9/10: work on a powerful server relative to a small one under SED (capacity ratio 2)
SED_WORK_RATIO = {"moderate": 2.329, "large": (2.67, 2.25)}


def paper_table_for(preset: str | None) -> dict[str, dict[float, tuple[float, float]]] | None:
    """The paper's JCT table for a topology preset (``moderate`` or ``large``), else None."""
    return {"moderate": MODERATE_WIKI_JCT_MS, "large": LARGE_JCT_MS}.get(preset or "")
