"""scikit-learn's ``GradientBoostingClassifier``, each stage's per-class trees grown in threads.

Why this exists: DCI (``dci.py``) fits one multiclass gradient-boosting classifier
per factor, and that is most of the reference suite's time (dSprites: ~250 s of
single-core fits at N = 10,000). A stage of a ``C``-class model grows ``C``
regression trees, one per class, on the negative gradients of the *previous*
stage's predictions, so the trees of one stage are independent of each other.
scikit-learn grows them one after another; its tree builder releases the GIL, so
here they are grown by a thread pool, one core each.

The model is scikit-learn's, tree for tree:

* the subclass overrides only the private ``_fit_stage`` and does what it does:
  the same negative gradient, the same ``DecisionTreeRegressor`` settings, the same
  leaf update (``_update_terminal_regions``, which writes only column ``k`` of the
  raw predictions, so threads never write the same memory);
* scikit-learn hands every tree of a stage the same ``RandomState``, from which
  each tree draws its seed in class order. Here tree ``k`` gets a copy of that
  generator in the state tree ``k`` would have found; after the stage the copies
  are checked to have ended where the next one began (else
  :class:`StageRandomnessError`), and the shared generator is left where the last
  tree left it.

The threaded stage is used only where it is this simple (dense ``X``, no row
subsampling, a multiclass loss with more than one tree per stage) and only if
scikit-learn's private functions still have the signatures written against
(checked at import; otherwise :data:`AVAILABLE` is ``False`` and callers use the
stock class). Tests compare predictions, probabilities and importances with the
stock class exactly, so a scikit-learn release that changes the stage is caught.
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["AVAILABLE", "StageRandomnessError", "fit_gradient_boosting"]

#: ``Splitter`` draws its seed as ``random_state.randint(0, RAND_R_MAX)``.
_RAND_R_MAX = np.iinfo(np.int32).max

_FIT_STAGE_PARAMS = [
    "self", "i", "X", "y", "raw_predictions", "sample_weight", "sample_mask",
    "random_state", "X_csc", "X_csr",
]
_UPDATE_PARAMS = [
    "loss", "tree", "X", "y", "neg_gradient", "raw_prediction", "sample_weight",
    "sample_mask", "learning_rate", "k",
]


class StageRandomnessError(RuntimeError):
    """A tree consumed random numbers differently from the one seed draw assumed."""


def _private_api() -> tuple[Any, Any] | None:
    try:
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.ensemble._gb import _update_terminal_regions
    except ImportError:  # pragma: no cover - depends on the scikit-learn release
        return None
    stage = list(inspect.signature(GradientBoostingClassifier._fit_stage).parameters)
    update = list(inspect.signature(_update_terminal_regions).parameters)
    if stage != _FIT_STAGE_PARAMS or update != _UPDATE_PARAMS:  # pragma: no cover
        return None
    return GradientBoostingClassifier, _update_terminal_regions


_API = _private_api()
#: Whether this scikit-learn has the stage this module replicates.
AVAILABLE = _API is not None


def _same_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


if _API is not None:
    _GBC, _update_terminal_regions = _API

    class _ThreadedStages(_GBC):  # type: ignore[misc, valid-type]
        """``GradientBoostingClassifier`` whose stages grow their class trees on ``_stage_pool``."""

        _stage_pool: ThreadPoolExecutor | None = None

        def _fit_stage(  # noqa: N803 - scikit-learn's names
            self, i, X, y, raw_predictions, sample_weight, sample_mask, random_state,
            X_csc=None, X_csr=None,
        ):
            from sklearn.tree import DecisionTreeRegressor

            n_trees = self.n_trees_per_iteration_
            if (
                self._stage_pool is None
                or n_trees < 2
                or not self._loss.is_multiclass
                or X_csc is not None
                or X_csr is not None
                or self.subsample < 1.0
            ):
                return super()._fit_stage(
                    i, X, y, raw_predictions, sample_weight, sample_mask, random_state, X_csc, X_csr
                )
            neg_gradient = -self._loss.gradient(
                y_true=y, raw_prediction=raw_predictions, sample_weight=None
            )
            starts, generators = [], []
            for _ in range(n_trees):
                starts.append(random_state.get_state())
                generator = np.random.RandomState()
                generator.set_state(starts[-1])
                generators.append(generator)
                random_state.randint(0, _RAND_R_MAX)  # the draw this tree will make

            def grow(k: int) -> Any:
                tree = DecisionTreeRegressor(
                    criterion="squared_error",
                    splitter="best",
                    max_depth=self.max_depth,
                    min_samples_split=self.min_samples_split,
                    min_samples_leaf=self.min_samples_leaf,
                    min_weight_fraction_leaf=self.min_weight_fraction_leaf,
                    min_impurity_decrease=self.min_impurity_decrease,
                    max_features=self.max_features,
                    max_leaf_nodes=self.max_leaf_nodes,
                    random_state=generators[k],
                    ccp_alpha=self.ccp_alpha,
                )
                tree.fit(X, neg_gradient[:, k], sample_weight=sample_weight, check_input=False)
                _update_terminal_regions(
                    self._loss, tree.tree_, X, np.array(y == k, dtype=np.float64),
                    neg_gradient[:, k], raw_predictions, sample_weight, sample_mask,
                    learning_rate=self.learning_rate, k=k,
                )
                return tree

            trees = list(self._stage_pool.map(grow, range(n_trees)))
            ends = [g.get_state() for g in generators]
            if not all(_same_state(ends[k], starts[k + 1]) for k in range(n_trees - 1)) or not (
                _same_state(ends[-1], random_state.get_state())
            ):
                raise StageRandomnessError(
                    "a tree drew random numbers other than one seed; threaded stages would "
                    "not reproduce scikit-learn's model"
                )
            for k, tree in enumerate(trees):
                self.estimators_[i, k] = tree
            return raw_predictions


def fit_gradient_boosting(
    x: np.ndarray, y: np.ndarray, params: dict[str, Any], threads: int = 1
) -> Any:
    """A fitted ``GradientBoostingClassifier(**params)`` on ``x (N, D)``, ``y (N,)``.

    With ``threads > 1`` (and :data:`AVAILABLE`) each stage's per-class trees are grown
    on that many threads; the result equals the stock fit (should a tree ever draw
    random numbers differently, the stock fit is done instead). Returns the stock
    class (a threaded fit is re-typed to it, so it pickles and prints as usual).
    """
    from sklearn.ensemble import GradientBoostingClassifier

    if threads <= 1 or not AVAILABLE:
        return GradientBoostingClassifier(**params).fit(x, y)
    model = _ThreadedStages(**params)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gbt-stage") as pool:
        model._stage_pool = pool
        try:
            model.fit(x, y)
        except StageRandomnessError:  # pragma: no cover - a scikit-learn we were not written for
            return GradientBoostingClassifier(**params).fit(x, y)
        finally:
            del model._stage_pool
    model.__class__ = GradientBoostingClassifier
    return model
