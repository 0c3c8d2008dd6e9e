import json

import pytest
from conftest import real_fixtures

from mice2machines.neural.labels import (
    CRE_LINES,
    UnknownCreLineError,
    cre_line_from_genotype,
    ei_class,
    normalise_cre_line,
)


def test_genotype_parsing_examples():
    assert cre_line_from_genotype("Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt") == (
        "Cux2-CreERT2"
    )
    assert cre_line_from_genotype(b"Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt") == (
        "Vip-IRES-Cre"
    )
    assert cre_line_from_genotype("Rbp4-Cre; Camk2a-tTA; Ai93") == "Rbp4-Cre_KL100"
    assert ei_class("Pvalb-IRES-Cre/wt") == "inhibitory"
    assert ei_class("Ntsr1-Cre_GN220") == "excitatory"


def test_unknown_cre_line_names_the_line():
    with pytest.raises(UnknownCreLineError, match="Foo-Cre"):
        normalise_cre_line("Foo-Cre")


def test_every_real_genotype_parses():
    root = real_fixtures()
    if root is None:
        pytest.skip("real Allen metadata (shared/data/allen) not present")
    pairs = json.loads((root / "specimen_genotypes.json").read_text())
    assert len(pairs) == 272
    lines = {cre_line_from_genotype(genotype) for _, genotype in pairs}
    assert lines == set(CRE_LINES)
    for specimen, genotype in pairs:
        # the specimen name starts with the same driver line
        assert normalise_cre_line(specimen.split(";")[0]) == cre_line_from_genotype(genotype)
    inhibitory = [g for _, g in pairs if ei_class(cre_line_from_genotype(g)) == "inhibitory"]
    assert {cre_line_from_genotype(g) for g in inhibitory} == {
        "Sst-IRES-Cre",
        "Vip-IRES-Cre",
        "Pvalb-IRES-Cre",
    }
