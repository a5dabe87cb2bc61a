"""Settings checks that name the bad value and what was expected."""

from __future__ import annotations


def require_positive_integers(owner: str, **values: int) -> None:
    """Raise ``ValueError`` naming the first of ``values`` below 1.

    Example:
        >>> require_positive_integers("MPPI", horizon=20, samples=0)
        Traceback (most recent call last):
        ...
        ValueError: MPPI samples=0; expected an integer >= 1
    """
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{owner} {name}={value}; expected an integer >= 1")
