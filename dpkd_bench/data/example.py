"""The one in-memory form every data source is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """A templated prompt, the training response and every valid reference."""

    id: str
    prompt: str  # templated, ends with "### Response:\n"
    response: str  # the training target
    references: tuple[str, ...] = field(default_factory=tuple)
    family: str = ""  # task family (synthetic suite) or category, for per-family figures

    def with_response(self, response: str) -> Example:
        return Example(self.id, self.prompt, response, self.references, self.family)
