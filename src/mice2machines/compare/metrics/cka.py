"""Linear CKA of the Gram matrices: unbiased HSIC (the default) or biased."""

from __future__ import annotations

from ..bootstrap import cka_bootstrap
from ..cka import cka_from_grams
from ..inference import cka_null
from ..registry import Metric, register_metric

ORDER = 2

for _unbiased, _what in ((True, "unbiased HSIC (Song et al. 2012)"), (False, "biased HSIC")):
    register_metric(
        Metric(
            name="cka_unbiased" if _unbiased else "cka_biased",
            kind="representation",
            higher_is_better=True,
            description=f"linear CKA, {_what}",
            score=lambda neural, model, _u=_unbiased: cka_from_grams(
                neural.grams, model.grams, unbiased=_u
            ),
            bootstrap=lambda neural, model, indices, device, _u=_unbiased: cka_bootstrap(
                neural.grams, model.grams, indices, unbiased=_u, device=device
            ),
            null=lambda neural, model, perms, device, _u=_unbiased: cka_null(
                neural.grams, model.grams, perms, unbiased=_u, device=device
            ),
            ceiling="split_half",
        )
    )
