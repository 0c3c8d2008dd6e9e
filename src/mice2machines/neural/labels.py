"""Visual areas and Cre lines of the Allen Brain Observatory, and genotype parsing.

Pure standard library: imported by both the main and the allensdk environment.
"""

from __future__ import annotations

AREAS = ("VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl")

# Cre line -> (cortical layers, excitatory/inhibitory class); from the Allen white paper.
CRE_LINES: dict[str, tuple[tuple[str, ...], str]] = {
    "Cux2-CreERT2": (("2/3", "4"), "excitatory"),
    "Emx1-IRES-Cre": (("2/3", "4", "5"), "excitatory"),
    "Slc17a7-IRES2-Cre": (("2/3", "4", "5"), "excitatory"),
    "Rorb-IRES2-Cre": (("4",), "excitatory"),
    "Scnn1a-Tg3-Cre": (("4",), "excitatory"),
    "Nr5a1-Cre": (("4",), "excitatory"),
    "Rbp4-Cre_KL100": (("5",), "excitatory"),
    "Fezf2-CreER": (("5",), "excitatory"),
    "Tlx3-Cre_PL56": (("5",), "excitatory"),
    "Ntsr1-Cre_GN220": (("6",), "excitatory"),
    "Sst-IRES-Cre": (("4", "5"), "inhibitory"),
    "Vip-IRES-Cre": (("2/3", "4"), "inhibitory"),
    "Pvalb-IRES-Cre": (("2/3", "4", "5"), "inhibitory"),
}

# Spellings seen in real NWB genotype strings that name the same line.
CRE_ALIASES = {"Rbp4-Cre": "Rbp4-Cre_KL100"}

EI_CLASSES = ("excitatory", "inhibitory")


class UnknownCreLineError(ValueError):
    """A genotype whose driver line is not one of the Visual Coding Cre lines."""


def cre_line_from_genotype(genotype: str | bytes) -> str:
    """Normalised Cre line of a genotype string ('Cux2-CreERT2/wt;Camk2a-tTA/wt;...')."""
    if isinstance(genotype, bytes):
        genotype = genotype.decode()
    driver = genotype.split(";")[0].split("/")[0].strip()
    return normalise_cre_line(driver)


def normalise_cre_line(name: str) -> str:
    """Canonical Cre line name; raises UnknownCreLineError for anything else."""
    name = name.split("/")[0].strip()
    name = CRE_ALIASES.get(name, name)
    if name not in CRE_LINES:
        raise UnknownCreLineError(
            f"unknown Cre line {name!r}; known: {', '.join(sorted(CRE_LINES))}"
        )
    return name


def ei_class(cre_line: str) -> str:
    """'excitatory' or 'inhibitory' for a (normalised or raw) Cre line."""
    return CRE_LINES[normalise_cre_line(cre_line)][1]


def mouse_from_specimen_name(name: str | bytes | None) -> str | None:
    """The mouse (the donor) of an Allen specimen name: its trailing number
    ('Cux2-CreERT2;Camk2a-tTA;Ai93-222426' -> '222426'; one real file spells it '356790.0');
    None without one."""
    import re

    if isinstance(name, bytes):
        name = name.decode()
    m = re.search(r"-(\d+)(?:\.0+)?$", str(name or "").strip())
    return m.group(1) if m else None


def experiment_mouse(experiment_id) -> str:
    """The mouse label of an experiment whose mouse is unknown: one mouse per experiment."""
    return f"experiment-{experiment_id}"
