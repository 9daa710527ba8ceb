"""Strategy parameters are declared once, in each strategy's ``__init__`` signature, with
pydantic's constrained types (``ewc_lambda: NonNegative = 100.0``). The same declaration is
checked on every path in: ``--param`` strings and TOML values through the registry (before
anything runs), and direct construction in Python through ``@checked``. A bad value is one
sentence naming the parameter, never a crash hours later or a silent ``nan``.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, create_model, validate_call

from scenarios.errors import InputError

#: an integer count of at least one (samples, views, batch sizes)
Count = Annotated[int, Field(ge=1)]
#: an integer that may be zero (a memory that may be empty, a warm-up that may be off)
NonNegativeInt = Annotated[int, Field(ge=0)]
#: a finite real >= 0 (penalty strengths, margins, loss weights)
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: a finite real in [0, 1] (mixing weights, decay factors)
UnitInterval = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def describe(err: ValidationError, what: str) -> str:
    """One line for a pydantic error: ``what: name=value: reason`` (the first problem; the count of
    the others), so the CLI can print it as a single sentence."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "value"
    given = first.get("input")
    shown = f"={given!r}" if not isinstance(given, dict) and first["type"] != "missing" else ""
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")
    return f"{what + ': ' if what else ''}{loc}{shown}: {msg[0].lower()}{msg[1:]}{more}"


def declared(classes: Iterable[type], skip: set[str]) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of the keyword-only parameters of each class's ``__init__``
    (later classes wrap the first), leaving out the runner's common arguments ``skip``."""
    out: dict[str, tuple[Any, Any]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name not in skip and p.kind == p.KEYWORD_ONLY:
                out[p.name] = (hints.get(p.name, Any), p.default)
    return out


@functools.cache
def _model(name: str, classes: tuple[type, ...], skip: frozenset[str], fixed: tuple[tuple[str, Any], ...]):
    fields = declared(classes, set(skip))
    for k, v in fixed:
        fields[k] = (fields.get(k, (Any, v))[0], v)
    return create_model(f"{name}_parameters", __config__=ConfigDict(extra="forbid"), **fields)


def validate(name: str, classes: tuple[type, ...], skip: set[str], values: dict[str, Any],
             fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """``values`` (strings from ``--param`` or typed values from TOML) checked and converted
    against the declaration; only the keys given come back."""
    model = _model(name, tuple(classes), frozenset(skip), tuple(sorted((fixed or {}).items())))
    unknown = [k for k in values if k not in model.model_fields]
    if unknown:
        known = ", ".join(f"{k}={f.default}" for k, f in model.model_fields.items()) or "none"
        raise InputError(f"strategy {name} has no parameter {unknown[0]!r}; its parameters: {known}")
    given = {k: None if isinstance(v, str) and v.strip().lower() == "none" else v for k, v in values.items()}
    try:
        checked_values = model.model_validate(given)
    except ValidationError as e:
        raise InputError(describe(e, f"strategy {name}")) from None
    return {k: getattr(checked_values, k) for k in values}


def checked(init: Callable) -> Callable:
    """Validate a strategy's ``__init__`` arguments against its declared types, so direct use in
    Python refuses ``ER(model, mem_size=-1)`` as the CLI does."""
    validated = validate_call(init, config=ConfigDict(arbitrary_types_allowed=True))

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            return validated(self, *args, **kwargs)
        except ValidationError as e:
            raise InputError(describe(e, f"{type(self).__name__}")) from None

    return wrapper
