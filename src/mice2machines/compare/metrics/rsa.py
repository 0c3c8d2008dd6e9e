"""RSA: Spearman or Pearson correlation of 1 - Pearson RDMs on their upper triangle."""

from __future__ import annotations

from ..bootstrap import rsa_bootstrap
from ..inference import rsa_null
from ..registry import Metric, register_metric
from ..rsa import rsa, upper_tri

ORDER = 1


def _score(method: str):
    return lambda neural, model: rsa(neural.rdms, model.rdms, method=method)


def _bootstrap(method: str):
    """All resamples of the stimuli, in blocks; pairs of a stimulus with its own copy are
    dropped (rsatoolbox's convention), as ``RDM_COMPARATORS[method]`` of each resample's
    kept pairs."""

    def fn(neural, model, indices, device):
        return rsa_bootstrap(neural.rdms, model.rdms, indices, method, device)

    return fn


def _null(method: str):
    """The neural RDMs' images permuted (rows and columns together), ranked once."""

    def fn(neural, model, perms, device):
        return rsa_null(upper_tri(neural.rdms), upper_tri(model.rdms), perms, method, device)

    return fn


for _method in ("spearman", "pearson"):
    register_metric(
        Metric(
            name=f"rsa_{_method}",
            kind="representation",
            higher_is_better=True,
            description=f"RSA: {_method} correlation of 1 - Pearson RDMs (upper triangle; the "
            "workflow removes the mean pattern first, compare.rsa_remove_mean_pattern)",
            score=_score(_method),
            bootstrap=_bootstrap(_method),
            null=_null(_method),
            ceiling="split_half",
        )
    )
