"""``positional_constructor`` builds exactly the value the public constructor builds."""

from __future__ import annotations

import dataclasses

import pytest

from streamproxy.core import Event, events
from streamproxy.core.events import positional_constructor


def _all_event_classes() -> list[type[Event]]:
    # from the module's namespace: __subclasses__ would also list the classes that
    # dataclass(slots=True) replaced
    return sorted(
        (
            value
            for value in vars(events).values()
            if isinstance(value, type) and issubclass(value, Event) and value is not Event
        ),
        key=lambda cls: cls.__name__,
    )


EVENT_CLASSES = _all_event_classes()


def test_there_are_events_to_check() -> None:
    assert len(EVENT_CLASSES) >= 14


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_positional_constructor_matches_the_public_one(cls: type[Event]) -> None:
    names = [field.name for field in dataclasses.fields(cls)]
    values = [f"value of {name}" for name in names]  # distinct, so a swapped field shows
    public = cls(**dict(zip(names, values, strict=True)))
    fast = positional_constructor(cls)(*values)
    assert type(fast) is cls
    assert fast == public and hash(fast) == hash(public) and repr(fast) == repr(public)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, names[0], "changed")
    assert not hasattr(fast, "__dict__")


def test_positional_constructor_refuses_a_wrong_number_of_values() -> None:
    from streamproxy.core import ToolCallPreview

    with pytest.raises((TypeError, ValueError)):
        positional_constructor(ToolCallPreview)(0, "id", {})
