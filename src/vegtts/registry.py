"""Named extension points: sampling backends, task suites and selection rules.

Each extension point keeps one `Registry`; an extension is one module that builds its entry and
registers it, plus the one import line in its package's `__init__` that loads that module
(docs/extending.md). Entries are plain frozen dataclasses with a `name`; registering imports
nothing heavy, so Snakemake can list tasks and plan keys without torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


EntryT = TypeVar("EntryT", bound=Named)


class Registry(Generic[EntryT]):
    """Entries by name, in registration order; `what` is an entry in words, `config_key` the
    setting that picks one (None: no setting does)."""

    def __init__(self, what: str, config_key: str | None = None):
        self.what = what
        self.config_key = config_key
        self._entries: dict[str, EntryT] = {}

    def register(self, entry: EntryT) -> EntryT:
        if entry.name in self._entries:
            raise ValueError(f"{self.what} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> EntryT:
        if name not in self._entries:
            where = f"config key '{self.config_key}': " if self.config_key else ""
            raise ValueError(f"{where}unknown {self.what} {name!r}; expected one of {list(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[EntryT]:
        return iter(list(self._entries.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)
