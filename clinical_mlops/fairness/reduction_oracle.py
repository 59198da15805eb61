"""The base estimator of the exponentiated-gradient reduction: a logistic regression fitted on sparse input.

Fairlearn's ``ExponentiatedGradient`` calls its base estimator (the "oracle") a few dozen times on
the same rows with different sample weights and reduced labels, and hands it the design as a dense
array (it validates its input as dense). The one-hot columns are mostly zeros, so
:class:`SparseLogisticRegression` fits each call on a CSR copy: every L-BFGS step's matrix products
touch only the non-zeros. Same model, solver, tolerance and iteration limit; the fitted coefficients
differ from the dense fit only by floating-point summation order. The registered model holds plain
:class:`~sklearn.linear_model.LogisticRegression` predictors (:func:`plain_logistic_regression`).

(Warm-starting each call from the previous one's coefficients was measured and rejected: it made the
search stop at fewer, worse predictors on the readmission cohort.)
"""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression

__all__ = ["SparseLogisticRegression", "plain_logistic_regression"]


class SparseLogisticRegression(LogisticRegression):
    """:class:`LogisticRegression` whose ``fit`` converts a dense design to CSR first."""

    def fit(self, X, y, sample_weight=None):
        from scipy import sparse

        return super().fit(X if sparse.issparse(X) else sparse.csr_matrix(X), y, sample_weight=sample_weight)


def plain_logistic_regression(fitted: LogisticRegression) -> LogisticRegression:
    """The fitted coefficients as a plain :class:`LogisticRegression` (what the registered model holds)."""
    if type(fitted) is LogisticRegression or not isinstance(fitted, LogisticRegression):
        return fitted  # e.g. fairlearn's DummyClassifier when the reduced labels have one class
    plain = LogisticRegression(**fitted.get_params())
    plain.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_") and not k.startswith("_")})
    return plain
