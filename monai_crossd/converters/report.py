"""Reports returned by the converters and the checkpoint loader: what was replaced, skipped or adapted."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConversionReport"]


@dataclass
class ConversionReport:
    """What a model converter did, by dotted module path (``""`` is the model itself).

    Attributes:
        method: the conversion (``"crossd"`` for :func:`convert_to_crossd`, or the ``method`` of
            :func:`convert_to_3d`).
        replaced: path -> ``"OldType -> NewType"`` (plus a short note on the weight placement).
        skipped: path -> why the module was left as it is (e.g. a non-square kernel).
    """

    method: str
    replaced: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{type(self).__name__}(method={self.method!r}): {len(self.replaced)} replaced, {len(self.skipped)} skipped"]
        lines += [f"  replaced {path or '<model>'}: {what}" for path, what in self.replaced.items()]
        lines += [f"  skipped  {path or '<model>'}: {why}" for path, why in self.skipped.items()]
        return "\n".join(lines)
