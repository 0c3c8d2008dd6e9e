"""RSA: one metric per RDM distance x comparator (``compare.rdm_methods``).

``rsa_<comparator>`` compares 1 - Pearson RDMs (rsa_spearman and rsa_pearson are in the
default metric list), ``rsa_<distance>_<comparator>`` the RDMs of another distance:
euclidean (from the Gram matrices of both sides), crossnobis (the neural store's
``rdm_crossnobis``, made by prepare from the repeats, against the layers' squared Euclidean
RDMs).
"""

from __future__ import annotations

from ..rdm_methods import COMPARATORS, DISTANCES
from ..registry import Metric, register_metric
from ..rsa import upper_tri

ORDER = 1

DEFAULT = ("rsa_spearman", "rsa_pearson")


def _score(distance, comparator):
    def fn(neural, model):
        a = upper_tri(distance.from_reps(neural))
        b = upper_tri(distance.from_reps(model))
        return comparator.compare(a, b)

    return fn


def _bootstrap(distance, comparator):
    """All resamples of the stimuli by the comparator's rule (``rdm_methods``)."""

    def fn(neural, model, indices, device):
        return comparator.bootstrap(
            distance.from_reps(neural), distance.from_reps(model), indices, device
        )

    return fn


def _null(distance, comparator):
    """The neural RDMs' images permuted (rows and columns together)."""

    def fn(neural, model, perms, device):
        a = upper_tri(distance.from_reps(neural))
        return comparator.null(a, upper_tri(distance.from_reps(model)), perms, device)

    return fn


for _dist in DISTANCES.values():
    if _dist.from_reps is None:
        continue
    for _cmp in COMPARATORS.values():
        _name = "rsa_" + ("" if _dist.name == "correlation" else f"{_dist.name}_") + _cmp.name
        _about = "1 - Pearson" if _dist.name == "correlation" else _dist.description
        register_metric(
            Metric(
                name=_name,
                kind="representation",
                higher_is_better=True,
                description=f"RSA: {_cmp.description} (rsatoolbox {_cmp.rsatoolbox!r}) of "
                f"{_about} RDMs (upper triangle; the workflow removes the mean pattern "
                "first, compare.rsa_remove_mean_pattern)",
                score=_score(_dist, _cmp),
                bootstrap=None if _cmp.bootstrap is None else _bootstrap(_dist, _cmp),
                null=_null(_dist, _cmp),
                ceiling="split_half",
                default=_name in DEFAULT,
            )
        )
