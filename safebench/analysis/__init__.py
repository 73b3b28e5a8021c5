"""Statistics over benchmark results: final scores, safe-RL metrics, rliable aggregates.

Every function is pure: it takes a tidy ``pandas.DataFrame`` and returns a new one.

Input (``df``) is one row per (run, epoch) with at least the columns
``run_id, algo, env, seed, status, epoch, steps, ep_ret, ep_cost, cost_limit``
(``eval_ret, eval_cost`` for ``how="eval"``); other columns are ignored.
``ep_cost`` is the training ``EpCost`` logged for the epoch (Ĵc, an average over
recently finished episodes), as in
``docs/algorithms.md#c-trpo-evaluation-protocol``.

``final_scores`` reduces it to one row per run ("scores"), which every other
function consumes. Runs whose ``status`` is not ``"done"`` keep their status in
the scores; every aggregating function leaves them out unless called with
``include_partial=True``, and reports how many it left out (an ``n_excluded``
column and ``result.attrs["notes"]``) or how many it let in (``n_partial``).

IQM, stratified bootstrap confidence intervals, probability of improvement and
performance profiles are computed by rliable. rliable's ``StratifiedBootstrap``
draws its resampling indices from NumPy's *global* random state (its
``random_state`` argument does not reach ``np.random.choice``), so each rliable
call here runs inside ``_seeded_numpy(seed)``, which seeds the global state and
restores it afterwards: the same input and seed give the same intervals, and the
caller's random stream is left untouched.

The functions live in submodules by topic (``scores``, ``aggregates``, ``comparisons``,
``against`` (matched-budget comparison of two results roots), ``seeds`` (interval width by
number of seeds, seeds needed to separate two methods), with shared helpers in
``common``); this package exports them all.
"""

from __future__ import annotations

from safebench.analysis.against import (
    SIDES,
    against_curves,
    against_table,
    matched_cells,
    matched_scores,
    rename_labels,
)
from safebench.analysis.aggregates import (
    aggregate,
    curve_estimates,
    per_env_table,
    performance_profiles,
    probability_of_improvement,
)
from safebench.analysis.common import (
    DONE,
    LOWER_IS_BETTER,
    FinalMode,
    NormMethod,
    Statistic,
    split_partial,
)
from safebench.analysis.comparisons import (
    ACROSS,
    crosscheck_table,
    gain_over_best_feasible_baseline,
    head_to_head,
    interval_ranks,
    ratio_of_means,
    reference_pairs,
    throughput_table,
    verdict,
)
from safebench.analysis.scores import (
    feasibility_table,
    final_scores,
    normalize_scores,
    regret_curve,
    wilson_interval,
)
from safebench.analysis.seeds import ci_width_by_seeds, closest_pairs, seeds_to_separate

__all__ = [
    "ACROSS",
    "DONE",
    "LOWER_IS_BETTER",
    "SIDES",
    "FinalMode",
    "NormMethod",
    "Statistic",
    "against_curves",
    "against_table",
    "aggregate",
    "ci_width_by_seeds",
    "closest_pairs",
    "crosscheck_table",
    "curve_estimates",
    "feasibility_table",
    "final_scores",
    "gain_over_best_feasible_baseline",
    "head_to_head",
    "interval_ranks",
    "matched_cells",
    "matched_scores",
    "normalize_scores",
    "per_env_table",
    "performance_profiles",
    "probability_of_improvement",
    "ratio_of_means",
    "reference_pairs",
    "regret_curve",
    "rename_labels",
    "seeds_to_separate",
    "split_partial",
    "throughput_table",
    "verdict",
    "wilson_interval",
]
