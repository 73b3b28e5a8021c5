"""Shared algorithm machinery: policies, critics, normalisation, GAE, trust-region tools, replay."""

from safebench.core.critics import CriticPair
from safebench.core.gae import centre, gae, standardize
from safebench.core.normalize import RunningMeanStd
from safebench.core.optim import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    frozen_distribution,
    hessian_vector_product,
    kl_mean,
    kl_sum_dims,
    set_flat_params,
)
from safebench.core.policies import (
    Actor,
    CategoricalActor,
    GaussianActor,
    NumpyCategoricalPolicy,
    NumpyGaussianPolicy,
    NumpyMLP,
    NumpyPolicy,
    build_mlp,
)
from safebench.core.replay import ReplayBuffer

__all__ = [
    "Actor",
    "CategoricalActor",
    "CriticPair",
    "GaussianActor",
    "LineSearchResult",
    "NumpyCategoricalPolicy",
    "NumpyGaussianPolicy",
    "NumpyMLP",
    "NumpyPolicy",
    "ReplayBuffer",
    "RunningMeanStd",
    "backtracking_line_search",
    "build_mlp",
    "centre",
    "conjugate_gradient",
    "fisher_vector_product",
    "flat_grad",
    "flat_params",
    "frozen_distribution",
    "gae",
    "hessian_vector_product",
    "kl_mean",
    "kl_sum_dims",
    "set_flat_params",
    "standardize",
]
