"""The threaded gradient-boosting stages (metrics/gbt.py) fit scikit-learn's model, tree for tree."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from vaebench.plugins.metrics import gbt


def data(classes: int, n: int = 600, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.floor(np.abs(3 * x[:, 0] + x[:, 1] + 0.5 * rng.normal(size=n)) * 2).astype(int) % classes
    return x, y


def test_this_scikit_learn_has_the_stage_gbt_replicates() -> None:
    # If a scikit-learn release changes the private stage, DCI silently loses its
    # threads; this test says so instead.
    assert gbt.AVAILABLE


@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("random_state", [0, 123])
def test_threaded_fit_equals_the_stock_fit(classes: int, random_state: int) -> None:
    x, y = data(classes)
    params = {**GradientBoostingClassifier().get_params(), "n_estimators": 12, "random_state": random_state}
    stock = GradientBoostingClassifier(**params).fit(x, y)
    threaded = gbt.fit_gradient_boosting(x, y, params, threads=3)
    assert type(threaded) is GradientBoostingClassifier
    assert threaded.estimators_.shape == stock.estimators_.shape == (12, 1 if classes == 2 else classes)
    np.testing.assert_array_equal(threaded.feature_importances_, stock.feature_importances_)
    np.testing.assert_array_equal(threaded.predict_proba(x), stock.predict_proba(x))
    np.testing.assert_array_equal(threaded.train_score_, stock.train_score_)
    for a, b in zip(threaded.estimators_.ravel(), stock.estimators_.ravel()):
        np.testing.assert_array_equal(a.tree_.threshold, b.tree_.threshold)
        np.testing.assert_array_equal(a.tree_.value, b.tree_.value)
    again = pickle.loads(pickle.dumps(threaded))
    np.testing.assert_array_equal(again.predict(x), stock.predict(x))


def test_ties_between_features_are_broken_as_the_stock_fit_breaks_them() -> None:
    # Duplicated columns make every split a tie, decided by each tree's own seed:
    # a tree given the wrong seed would pick the other copy of the column.
    x, y = data(5, d=3, seed=4)
    x = np.repeat(x, 3, axis=1)
    params = {**GradientBoostingClassifier().get_params(), "n_estimators": 10, "random_state": 7}
    stock = GradientBoostingClassifier(**params).fit(x, y)
    threaded = gbt.fit_gradient_boosting(x, y, params, threads=2)
    np.testing.assert_array_equal(threaded.feature_importances_, stock.feature_importances_)
    assert np.count_nonzero(stock.feature_importances_[:3]) >= 2  # the seeds did matter
