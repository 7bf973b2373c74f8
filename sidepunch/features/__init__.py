"""The built-in features (unique jobs, rate limits, batches, expiring jobs), each a `core.middleware.Feature` in
its own module here, and `FeatureSet`: the features one process built, and which of them a job goes through.

A feature wraps only the jobs it concerns (by a payload key or a job-class attribute), so a plain job pays one
set-disjointness test and an attribute lookup per feature attribute, nothing else. Every client (for its pushes)
and every worker process (for its runs and deaths) builds the features in BUILTIN's order, outermost first,
outside the user's middleware: a job a feature holds back never reaches the user's middleware.

Imports only sidepunch.core at import time; each feature module is imported when a FeatureSet is built.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..core.middleware import Feature, MiddlewareContext, hooks, load_dotted

#: Dotted paths of the built-in Feature classes, outermost first.
BUILTIN: tuple[str, ...] = ("sidepunch.features.batch.BatchFeature", "sidepunch.features.expiry.ExpiryFeature",
                           "sidepunch.features.limits.LimitsFeature", "sidepunch.features.unique.UniqueFeature")


class FeatureSet:
    """Built features and their hook chains; `for_push`, `for_run` and `for_death` prepend the hooks of the
    features that concern a job to a base chain (the user's middleware), or return the base chain untouched;
    `reports` and `after_push` give a push's outcome to the features that want it."""

    def __init__(self, features: Sequence[Feature] = ()) -> None:
        self.features = tuple(features)
        self._keys = frozenset().union(*(f.payload_keys for f in self.features))
        self._attrs = tuple(sorted({name for f in self.features for name in f.class_attrs}))
        # hook name -> (feature, its bound hook), for the features that define that hook
        self._hooks = {name: [(f, getattr(f, name)) for f in self.features if hooks([f], name)]
                       for name in ("around_push", "around_perform", "around_perform_async", "on_death")}
        # features that decide pushes by more than payload keys (a batch open in this context): always asked
        self._push_always = [(f, hook) for f, hook in self._hooks["around_push"]
                             if type(f).applies_to_push is not Feature.applies_to_push]
        # the features that want a push's outcome (which jids were written, which refused)
        self._after = tuple(f for f in self.features if type(f).after_push is not Feature.after_push)

    def __bool__(self) -> bool:
        return bool(self.features)

    def for_push(self, job: dict, base: tuple[Callable[..., Any], ...]) -> tuple[Callable[..., Any], ...]:
        if self._keys.isdisjoint(job):  # the common case: only the features that are always asked
            own = tuple(hook for f, hook in self._push_always if f.applies_to_push(job))
        else:
            own = tuple(hook for f, hook in self._hooks["around_push"] if f.applies_to_push(job))
        return own + base if own else base

    def reports(self, job: dict) -> bool:
        """Whether a feature wants the outcome of this job's push (`after_push`); asked by the client only for a
        job whose push chain a feature joined (for_push did not return its base), so a plain push never asks."""
        return any(f.applies_to_push(job) for f in self._after)

    def after_push(self, written: Sequence[str], refused: Sequence[str]) -> None:
        """After the write of a push for which `reports` said yes: tell each feature that wants it."""
        for feature in self._after:
            feature.after_push(written, refused)

    def concerns(self, instance: Any, job: dict) -> bool:
        """The cheap pre-filter of a run: a feature's payload key, or a feature's class attribute set."""
        if not self._keys.isdisjoint(job):
            return True
        for name in self._attrs:
            if getattr(instance, name, None):
                return True
        return False

    def for_run(self, hook: str, instance: Any, job: dict,
                base: Sequence[Callable[..., Any]]) -> Sequence[Callable[..., Any]]:
        """The chain of `hook` ("around_perform" or "around_perform_async") for this job: `base` itself for a job
        no feature concerns (`concerns`, inlined: a plain job pays this check once per run)."""
        if self._keys.isdisjoint(job):
            for name in self._attrs:
                if getattr(instance, name, None):
                    break
            else:
                return base
        own = tuple(bound for f, bound in self._hooks[hook] if f.applies(instance, job))
        return (*own, *base) if own else base

    def for_death(self, job: dict, base: Sequence[Callable[..., Any]]) -> Sequence[Callable[..., Any]]:
        """The death handlers for a job that died (features first; judged by payload keys only, since a job
        may die without its class)."""
        if self._keys.isdisjoint(job):
            return base
        own = tuple(hook for f, hook in self._hooks["on_death"] if not f.payload_keys.isdisjoint(job))
        return (*own, *base) if own else base


def build_features(context: MiddlewareContext | None, paths: Sequence[str] | None = None) -> FeatureSet:
    """A FeatureSet of the BUILTIN features (or `paths`), each built with `context`."""
    return FeatureSet([load_dotted(path)(context) for path in (BUILTIN if paths is None else paths)])


__all__ = ["BUILTIN", "FeatureSet", "build_features"]
