"""The diagnostic plots of a training run, logged to its MLflow run: confusion matrix and ROC
(classification) or residuals (regression), and permutation feature importance."""

from __future__ import annotations

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.model.metrics import CLASSIFICATION, SKLEARN_SCORERS

IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 3


def log_plots(pipe, X, y, task_type: str, metric: str, config: PipelineConfig) -> None:
    """Confusion matrix + ROC (classification) or residuals (regression), and feature importance."""
    import mlflow
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import ConfusionMatrixDisplay, PredictionErrorDisplay, RocCurveDisplay

    predictions = pipe.predict(X)
    if task_type == CLASSIFICATION:
        fig = Figure(figsize=(6, 5))
        ConfusionMatrixDisplay.from_predictions(y, predictions, ax=fig.subplots(),
                                                colorbar=False)
        fig.suptitle("Confusion matrix (holdout)")
        mlflow.log_figure(fig, "plots/confusion_matrix.png")
        classes = pipe.classes_
        if len(classes) == 2:
            fig = Figure(figsize=(6, 5))
            RocCurveDisplay.from_predictions(
                np.asarray(y) == classes[1], pipe.predict_proba(X)[:, 1], ax=fig.subplots(),
                name="candidate",
            )
            fig.suptitle("ROC curve (holdout)")
            mlflow.log_figure(fig, "plots/roc_curve.png")
    else:
        fig = Figure(figsize=(11, 5))
        ax_resid, ax_actual = fig.subplots(1, 2)
        PredictionErrorDisplay.from_predictions(
            y, predictions, kind="residual_vs_predicted", ax=ax_resid,
            subsample=2000, random_state=config.seed,
        )
        PredictionErrorDisplay.from_predictions(
            y, predictions, kind="actual_vs_predicted", ax=ax_actual,
            subsample=2000, random_state=config.seed,
        )
        fig.suptitle("Residuals (holdout)")
        mlflow.log_figure(fig, "plots/residuals.png")

    n = min(len(X), IMPORTANCE_ROWS)
    rows = np.random.default_rng(config.seed).choice(len(X), size=n, replace=False)
    result = permutation_importance(
        pipe, X.iloc[np.sort(rows)], np.asarray(y)[np.sort(rows)],
        scoring=SKLEARN_SCORERS[metric], n_repeats=IMPORTANCE_REPEATS,
        random_state=config.seed, n_jobs=1,
    )
    order = np.argsort(result.importances_mean)
    table = {
        str(X.columns[i]): {"mean": float(result.importances_mean[i]),
                            "std": float(result.importances_std[i])}
        for i in order[::-1]
    }
    mlflow.log_dict({"metric": metric, "rows": n, "importances": table},
                    "feature_importance.json")
    fig = Figure(figsize=(7, max(3, 0.3 * len(order) + 1)))
    ax = fig.subplots()
    ax.barh([str(X.columns[i]) for i in order], result.importances_mean[order],
            xerr=result.importances_std[order])
    ax.set_xlabel(f"drop in {metric} when the column is shuffled")
    fig.suptitle(f"Permutation importance ({n} holdout rows)")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/feature_importance.png")

