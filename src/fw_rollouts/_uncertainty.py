"""Uncertainty from logprobs, as pure functions over plain data: per token, per sample, over samples.

Per token, from the alternatives a server returned at a position (``{token: logprob}``):

* :func:`topk_entropy`: ``-sum(p * log p)`` over the returned alternatives, in nats. A server
  returns at most a few of them (k <= 5 on Fireworks), so this is a *partial* sum, never the full
  entropy of the next-token distribution: the full entropy is at least this much, and the
  alternatives not returned hold :func:`residual_mass` of the probability. Read the two together.
* :func:`residual_mass`: ``1 - sum(p)`` over the returned alternatives, clipped at 0 (float32
  rounding can make a near-certain token's probability a hair above 1).
* :func:`surprisal`: ``-logprob`` of the chosen token, in nats.
* :func:`rank`: where the chosen token stands among the alternatives (0: the most likely), or
  None when it is not one of the top k.

Per sample, over the generated positions: :func:`sum_logprob` (the sequence log-likelihood) and
:func:`mean_logprob` (its length-normalised form). The first echoed position, which has no logprob,
is never counted: it belongs to the prompt.

Over samples: :func:`semantic_entropy`, from cluster ids the user supplies (samples that mean the
same thing share an id), in the two forms of Farquhar et al. (2024), "Detecting hallucinations in
large language models using semantic entropy", code at github.com/jlko/semantic_uncertainty
(``semantic_uncertainty/uncertainty/uncertainty_measures/semantic_entropy.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ._exceptions import ValidationError

if TYPE_CHECKING:
    from ._logprobs import Logprobs

__all__ = [
    "mean_logprob",
    "rank",
    "requested_alternatives",
    "residual_mass",
    "semantic_entropy",
    "sum_logprob",
    "surprisal",
    "topk_entropy",
]


def topk_entropy(alternatives: Mapping[str, float] | None) -> float | None:
    """``-sum(p * log p)`` over the returned alternatives (nats): a lower bound of the full entropy.

    None where no alternatives were returned (the first echoed position, or logprobs without
    alternatives). Never call it the entropy: report it with :func:`residual_mass`, the
    probability the returned alternatives leave out.
    """
    if not alternatives:
        return None
    total = -math.fsum(math.exp(lp) * lp for lp in alternatives.values())
    # A logprob a hair above 0 (float32 rounding) gives a term a hair below 0: no entropy is negative.
    return max(total, 0.0)


def residual_mass(alternatives: Mapping[str, float] | None) -> float | None:
    """``1 - sum(p)`` over the returned alternatives, clipped at 0: the probability of every token not returned.

    None where no alternatives were returned.
    """
    if not alternatives:
        return None
    return max(1.0 - math.fsum(math.exp(lp) for lp in alternatives.values()), 0.0)


def surprisal(logprob: float | None) -> float | None:
    """``-logprob`` (nats): how surprised the model was by the token; None where there is no logprob."""
    return None if logprob is None else -logprob


def rank(token: str, alternatives: Mapping[str, float] | None, k: int | None = None) -> int | None:
    """Rank of the chosen ``token`` among ``alternatives``: 0 when none is more likely, None beyond the top ``k``.

    The rank is the number of alternatives strictly more likely than the token (ties share the
    better rank). None when the token is not among the alternatives, or when ``k`` is given and
    the rank is ``k`` or more: the legacy logprobs format (``logprobs=k``) always adds the chosen
    token to the top k, so a token found there with rank k was only added, and its true rank is
    k or more, not known.
    """
    if not alternatives or token not in alternatives:
        return None
    mine = alternatives[token]
    better = sum(1 for other, lp in alternatives.items() if lp > mine and other != token)
    if k is not None and better >= k:
        return None
    return better


def requested_alternatives(
    top_logprobs: Iterable[Mapping[str, float] | None], tokens: Iterable[str] | None = None
) -> int | None:
    """How many alternatives per position were asked for, as a run's ``top_logprobs`` show it (None: none returned).

    With ``logprobs=k`` the legacy format lists the top k at each position, and adds the chosen token as a
    (k + 1)th entry where it is not among them; a position can also list fewer than k (two tokens spelled the
    same share one key). Given the chosen ``tokens``, a position where the token is missing or some other
    alternative is less likely than it has no added entry, so its size is what was asked for: the largest such
    size is the answer. Without ``tokens``, or when no position shows that (every chosen token was the least
    likely entry), it is the fewest alternatives at any position that has some; only a run in which every chosen
    token was outside the top k then reads as k + 1. Pass ``k`` to :meth:`Logprobs.ranks` to be exact.
    """
    sizes: list[int] = []
    exact = 0
    pairs = zip(top_logprobs, tokens, strict=True) if tokens is not None else ((alts, None) for alts in top_logprobs)
    for alternatives, token in pairs:
        if not alternatives:
            continue
        size = len(alternatives)
        sizes.append(size)
        if token is None or size <= exact:
            continue
        mine = alternatives.get(token)
        if mine is None or any(lp < mine for other, lp in alternatives.items() if other != token):
            exact = size
    if exact:
        return exact
    return min(sizes, default=None)


def sum_logprob(logprobs: Logprobs) -> float:
    """The generated tokens' log-likelihood: the sum of their logprobs (the echoed prompt's never counted)."""
    return logprobs.get_generation_logprobs().sum()


def mean_logprob(logprobs: Logprobs) -> float:
    """The mean logprob of the generated tokens (NaN when there are none); the prompt's never counted."""
    return logprobs.get_generation_logprobs().mean()


def semantic_entropy(cluster_ids: Sequence[Hashable], log_likelihoods: Sequence[float] | None = None) -> float:
    """Semantic entropy (nats) of samples grouped by meaning: ``cluster_ids[i]`` is sample i's cluster.

    Without ``log_likelihoods``, the entropy of the cluster frequencies (jlko/semantic_uncertainty's
    ``cluster_assignment_entropy``): ``-sum(f * log f)`` with ``f`` each cluster's share of the
    samples. It needs no logprobs.

    With ``log_likelihoods`` (one per sample), the likelihood-weighted form (their
    ``logsumexp_by_id(..., agg="sum_normalized")`` then ``predictive_entropy_rao``): each cluster's
    probability mass is ``logsumexp`` of its samples' log-likelihoods minus ``logsumexp`` of all
    of them, and the entropy is ``-sum(p * log p)`` over those masses. Their experiments pass
    each sample's *mean* token logprob (length-normalised, :func:`mean_logprob`); the sum
    (:func:`sum_logprob`) is the sequence log-likelihood itself. Samples drawn twice are counted
    twice, as in their code.

    Cluster ids are anything hashable (strings, ints): clustering (bidirectional entailment in the
    paper) is the caller's.
    """
    n = len(cluster_ids)
    if n == 0:
        raise ValidationError("cluster_ids", cluster_ids, "one cluster id per sample, at least one sample")
    if log_likelihoods is None:
        return max(-math.fsum(c / n * math.log(c / n) for c in Counter(cluster_ids).values()), 0.0)
    if len(log_likelihoods) != n:
        raise ValidationError(
            "log_likelihoods", log_likelihoods, f"one log-likelihood per sample: {n}, as many as cluster_ids"
        )
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in log_likelihoods):
        raise ValidationError("log_likelihoods", log_likelihoods, "finite numbers (log-likelihoods, at most 0)")
    by_cluster: dict[Hashable, list[float]] = {}
    for cluster, ll in zip(cluster_ids, log_likelihoods, strict=True):
        by_cluster.setdefault(cluster, []).append(float(ll))
    everything = _logsumexp([float(x) for x in log_likelihoods])
    masses = [_logsumexp(lls) - everything for lls in by_cluster.values()]
    return max(-math.fsum(math.exp(m) * m for m in masses), 0.0)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))
