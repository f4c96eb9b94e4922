"""Hyperparameter declarations: every agent declares its hyperparameters once, as a frozen dataclass in its own file.

A declaration is a dataclass whose fields are made with :func:`hparam`: type (the annotation), default (the
original CLI's default, spec 5.4), allowed range or choices, unit and a one-line meaning. :class:`CommonHP` (in
``agents/base.py``) holds what every agent reads (optimiser, epochs, backbone, inputs, ...); an agent's own class
extends it (e.g. ``AugMemHP`` in ``agents/augmem.py``) and the agent class points at it (``HP = AugMemHP``).

:func:`check_hparams` validates a fully resolved job: unknown key (with the closest declared name), wrong type,
out-of-range value, each reported with the agent, the key and where the value came from (``sources``), all in one
error. It returns the complete hyperparameters (declared defaults filled in, floats as floats), which is what the
agent, ``metrics.json`` and the job fingerprint see, on every route (Snakemake, DVC, the CLI).

Execution-only settings (``affects_results=False``: loader workers, the decoded-image cache) cannot change any
number; :func:`results_hparams` leaves them out of a job's fingerprint.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

from augmem.io import InputError


def hparam(default: Any, help: str, *, unit: str | None = None, min: float | None = None, max: float | None = None,
           gt: float | None = None, choices: tuple | None = None, affects_results: bool = True) -> Any:
    """A declared hyperparameter (a dataclass field): default, one-line meaning, unit, range or choices.

    ``min``/``max`` are inclusive bounds, ``gt`` an exclusive lower bound. ``affects_results=False`` marks
    execution-only settings, left out of the job fingerprint."""
    meta = {"help": help, "unit": unit, "min": min, "max": max, "gt": gt,
            "choices": tuple(choices) if choices is not None else None, "affects_results": affects_results}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Declared:
    """One declared hyperparameter, as read from a declaration dataclass."""

    name: str
    types: tuple[type, ...]  # allowed Python types (NoneType included when optional)
    default: Any
    help: str
    unit: str | None
    min: float | None
    max: float | None
    gt: float | None
    choices: tuple | None
    affects_results: bool

    @property
    def optional(self) -> bool:
        return type(None) in self.types

    def type_name(self) -> str:
        names = [t.__name__ for t in self.types if t is not type(None)]
        return " or ".join(names) + (" or null" if self.optional else "")

    def check(self, value: Any) -> tuple[Any, str | None]:
        """(normalised value, None) or (value, what is wrong)."""
        if value is None:
            return (None, None) if self.optional else (value, f"must be a {self.type_name()}, not null")
        base = [t for t in self.types if t is not type(None)]
        if float in base and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # 1 -> 1.0 for a float key, identically on every route
        ok = any(isinstance(value, t) and not (t in (int, float) and isinstance(value, bool)) for t in base)
        if not ok:
            hint = ""
            if isinstance(value, str) and float in base:
                hint = " (YAML reads 1e-4 as a string: write 1.0e-4)"
            return value, f"must be a {self.type_name()}, not {type(value).__name__} {value!r}{hint}"
        if self.choices is not None and value not in self.choices:
            return value, f"must be one of {list(self.choices)}, not {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                return value, f"must be >= {self.min}, not {value!r}"
            if self.max is not None and value > self.max:
                return value, f"must be <= {self.max}, not {value!r}"
            if self.gt is not None and not value > self.gt:
                return value, f"must be > {self.gt}, not {value!r}"
        return value, None

    def describe(self) -> str:
        rng = []
        if self.choices is not None:
            rng.append("one of " + ", ".join(map(str, self.choices)))
        if self.gt is not None:
            rng.append(f"> {self.gt:g}")
        if self.min is not None:
            rng.append(f">= {self.min:g}")
        if self.max is not None:
            rng.append(f"<= {self.max:g}")
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.name} ({self.type_name()}, default {self.default!r}{', ' + '; '.join(rng) if rng else ''}){unit}: {self.help}"


def _types_of(annotation: Any) -> tuple[type, ...]:
    if isinstance(annotation, str):  # `from __future__ import annotations`
        annotation = eval(annotation, {"typing": typing, "Any": Any, "dict": dict, "float": float, "int": int,  # noqa: S307
                                       "str": str, "bool": bool, "None": None})
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for a in typing.get_args(annotation):
            out += list(_types_of(a))
        return tuple(out)
    if annotation is None or annotation is type(None):
        return (type(None),)
    if origin is not None:
        return (origin,)
    return (annotation,)


def declared(decl: type) -> dict[str, Declared]:
    """name -> :class:`Declared` for a declaration dataclass (its own fields and inherited ones)."""
    out = {}
    for f in dataclasses.fields(decl):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        m = f.metadata
        out[f.name] = Declared(f.name, _types_of(f.type), default, m.get("help", ""), m.get("unit"), m.get("min"),
                               m.get("max"), m.get("gt"), m.get("choices"), m.get("affects_results", True))
    return out


def defaults(decl: type) -> dict[str, Any]:
    return {name: d.default for name, d in declared(decl).items()}


def closest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_hparams(decl: type, hp: Mapping[str, Any], *, agent: str, sources: Mapping[str, str] | None = None,
                  extra_check=None) -> dict[str, Any]:
    """Validate ``hp`` against the declaration ``decl``; return the complete, normalised hyperparameters.

    Every problem (unknown key, wrong type, out of range; plus what ``extra_check(hp) -> [(key, message)]`` finds
    across keys) is listed in one :class:`InputError` naming ``agent``, the key and its source."""
    decls = declared(decl)
    sources = sources or {}
    problems = []
    out = defaults(decl)
    for key, value in hp.items():
        src = sources.get(key, "the given hyperparameters")
        if key not in decls:
            problems.append(f"{key} (from {src}): unknown hyperparameter{closest(key, decls)}")
            continue
        value, err = decls[key].check(value)
        if err:
            problems.append(f"{key} = {hp[key]!r} (from {src}): {err}")
        out[key] = value
    if not problems and extra_check is not None:
        for key, msg in extra_check(out):
            problems.append(f"{key} (from {sources.get(key, 'the declared default')}): {msg}")
    if problems:
        raise InputError(f"agent {agent}: " + "; ".join(problems))
    return out


def results_hparams(decl: type, hp: Mapping[str, Any]) -> dict[str, Any]:
    """``hp`` without the execution-only settings (those that cannot change any number): the fingerprint's view."""
    decls = declared(decl)
    return {k: v for k, v in hp.items() if k not in decls or decls[k].affects_results}


def execution_only(decl: type) -> list[str]:
    return [name for name, d in declared(decl).items() if not d.affects_results]


def describe(decl: type) -> str:
    """One line per declared hyperparameter (for --help texts and the README)."""
    return "\n".join(d.describe() for d in declared(decl).values())
