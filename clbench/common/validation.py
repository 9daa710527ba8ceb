"""Values are declared once, where they are defined, with pydantic's constrained types: a
strategy's parameters in its ``__init__`` signature (``ewc_lambda: NonNegative = 100.0``), an
ordering's in its function's, the run settings on their dataclass fields. The same declaration
is checked on every path in: ``--param`` strings and TOML values (before anything runs) and
direct calls in Python (``@checked``). A bad value is one sentence naming it, never a crash
hours later or a silent ``nan``.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, create_model, validate_call

from clbench.common.errors import InputError

#: an integer count of at least one (samples, views, batch sizes)
Count = Annotated[int, Field(ge=1)]
#: an integer that may be zero (a memory that may be empty, a warm-up that may be off)
NonNegativeInt = Annotated[int, Field(ge=0)]
#: a finite real >= 0 (penalty strengths, margins, loss weights)
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: a finite real in [0, 1] (mixing weights, decay factors)
UnitInterval = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
#: a finite real > 0 (learning rates, epochs)
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: any finite real (angles)
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: a finite share in [0, 1) (momentum, the validation fraction)
Share = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
#: the training augmentation families (``clbench.strategies.augment``): declared here, torch-free,
#: because the run settings declare them too
Family = Literal["none", "weak", "standard"]


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


def declared(functions: Iterable[Callable], skip: set[str]) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of the keyword-only parameters of each function (a class stands
    for its ``__init__``; later ones wrap the first), leaving out ``skip``."""
    out: dict[str, tuple[Any, Any]] = {}
    for fn in functions:
        fn = fn.__init__ if isinstance(fn, type) else fn
        hints = typing.get_type_hints(fn, include_extras=True)
        for p in inspect.signature(fn).parameters.values():
            if p.name not in skip and p.kind == p.KEYWORD_ONLY:
                out[p.name] = (hints.get(p.name, Any), p.default)
    return out


@functools.cache
def _model(what: str, functions: tuple[Callable, ...], skip: frozenset[str], fixed: tuple[tuple[str, Any], ...]):
    fields = declared(functions, set(skip))
    for k, v in fixed:
        fields[k] = (fields.get(k, (Any, v))[0], v)
    name = "".join(c if c.isalnum() else "_" for c in what)
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def validate_keywords(what: str, functions: Iterable[Callable], values: dict[str, Any],
                      skip: Iterable[str] = (), fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """``values`` (strings from the command line or typed values from TOML) checked and converted
    against the keyword-only parameters the ``functions`` declare; only the keys given come back.
    The string ``none`` means None."""
    model = _model(what, tuple(functions), frozenset(skip), tuple(sorted((fixed or {}).items())))
    unknown = [k for k in values if k not in model.model_fields]
    if unknown:
        known = ", ".join(f"{k}={f.default}" for k, f in model.model_fields.items()) or "none"
        raise InputError(f"{what} has no parameter {unknown[0]!r}; its parameters: {known}")
    given = {k: None if isinstance(v, str) and v.strip().lower() == "none" else v for k, v in values.items()}
    try:
        checked_values = model.model_validate(given)
    except ValidationError as e:
        raise InputError(describe(e, what)) from None
    return {k: getattr(checked_values, k) for k in values}


def checked(fn: Callable) -> Callable:
    """Validate a function's (or ``__init__``'s) arguments against its declared types, so direct
    use in Python refuses ``ER(model, mem_size=-1)`` as the command line does."""
    validated = validate_call(fn, config=ConfigDict(arbitrary_types_allowed=True))
    method = next(iter(inspect.signature(fn).parameters), None) == "self"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return validated(*args, **kwargs)
        except ValidationError as e:
            raise InputError(describe(e, type(args[0]).__name__ if method and args else fn.__name__)) from None

    return wrapper


def coerce_value(key: str, value: Any, default: Any) -> Any:
    """A ``name=value`` string as the type of ``default``, for parameters declared by others (orderings,
    Avalanche's strategies); with no default, a number if it reads as one. Numbers must be finite."""
    if isinstance(value, str):
        value = _parse(key, value, default)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"parameter {key}={value} must be a finite number")
    return value


def _parse(key: str, value: str, default: Any) -> Any:
    casts = {bool: _bool, int: int, float: float, str: str}.get(type(default), None)
    try:
        if casts is not None:
            return casts(value)
    except ValueError:
        raise InputError(f"parameter {key}={value!r} is not a valid {type(default).__name__}") from None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return None if value.lower() == "none" else value


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)
