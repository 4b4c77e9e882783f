"""Evaluation of NCML models: likelihoods (bits/dim), the LSB sanity test and noise robustness (Δlog p),
out-of-distribution AUROC, the exact Bayes classifier of class-conditional models, and Fréchet distances for
sample quality. Figures need matplotlib (optional).
"""

from .classify import class_posterior, matched_time, noisy_marginal_draw, smoothed_class_posterior
from .fid import (DigitClassifier, DigitClassifierConfig, classifier_features, classifier_metrics,
                  feature_statistics, frechet_distance, frechet_distance_bootstrap, frechet_distance_from_statistics,
                  inception_features, load_digit_classifier)
from .likelihood import BitsPerDim, bits_per_dim, bits_per_dim_from_log_prob
from .ood import OODResult, auroc, ood_auroc
from .reporting import (format_table, make_grid, plot_bits_per_dim, plot_confusion, plot_ood_histograms,
                        plot_robustness)
from .robustness import RobustnessResult, default_times, lsb_flip, noise_robustness

__all__ = [
    "bits_per_dim", "BitsPerDim", "bits_per_dim_from_log_prob",
    "lsb_flip", "noise_robustness", "RobustnessResult", "default_times",
    "auroc", "ood_auroc", "OODResult",
    "class_posterior", "matched_time", "noisy_marginal_draw", "smoothed_class_posterior",
    "frechet_distance", "frechet_distance_bootstrap", "frechet_distance_from_statistics", "feature_statistics",
    "DigitClassifier", "DigitClassifierConfig", "load_digit_classifier", "classifier_features",
    "classifier_metrics", "inception_features",
    "make_grid", "format_table", "plot_robustness", "plot_bits_per_dim", "plot_ood_histograms", "plot_confusion",
]
