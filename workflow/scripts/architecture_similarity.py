"""Rule architecture_similarity: Needleman-Wunsch similarity of the zoo's layer sequences."""

import json

import pandas as pd

from mice2machines.io import script_logger
from mice2machines.models import archsim, zoo

log = script_logger(snakemake.log[0])
job = json.loads(snakemake.params.cfg)
cfg = dict(job["archsim"])
n_short = cfg.pop("shortlist", 5)
seqs = archsim.zoo_sequences([zoo.ModelSpec(**s) for s in job["specs"]])
sim = archsim.similarity_matrix(seqs, **cfg)
sim.to_csv(snakemake.output.similarity, sep="\t", float_format="%.6g")
pd.DataFrame(
    {
        "architecture": list(seqs),
        "length": [len(s) for s in seqs.values()],
        "letters": list(seqs.values()),
    }
).to_csv(snakemake.output.sequences, sep="\t", index=False)
picked = archsim.shortlist(sim, n_short)
pd.DataFrame({"rank": range(1, len(picked) + 1), "architecture": picked}).to_csv(
    snakemake.output.shortlist, sep="\t", index=False
)
archsim.plot_similarity(sim, snakemake.output.heatmap)
log.info("%d architectures; shortlist %s", len(seqs), picked)
