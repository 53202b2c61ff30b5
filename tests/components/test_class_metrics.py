from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np

from components.class_metrics import class_metrics


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=60))))
def test_the_same_figures_as_sklearn(case):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    n, pairs = case
    labels, predictions = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    classes = [f"k{i}" for i in range(n)]
    matrix, per_class = class_metrics(labels, predictions, classes)
    indices = list(range(n))
    assert (matrix == confusion_matrix(labels, predictions, labels=indices)).all()
    precision, recall, _, support = precision_recall_fscore_support(labels, predictions, labels=indices,
                                                                    zero_division=0)
    for i, name in enumerate(classes):
        assert per_class[name] == {"precision": float(precision[i]), "recall": float(recall[i]),
                                   "support": int(support[i])}
