"""Reports returned by the converters and the checkpoint loader: what was replaced, skipped or adapted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ConversionReport", "key_mismatch"]

SHOWN_KEYS = 8  #: keys listed per kind in :func:`key_mismatch`; the rest are counted


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


def key_mismatch(missing: Sequence[str], unexpected: Sequence[str], mismatched: Mapping[str, str]) -> str:
    """One line naming the keys that keep a ``state_dict`` from fitting a model ("" when nothing is wrong).

    Args:
        missing: model keys the checkpoint lacks.
        unexpected: checkpoint keys the model lacks.
        mismatched: key -> what differs (e.g. ``"checkpoint (8, 3) vs model (4, 3)"``).

    Example:
        >>> key_mismatch(["fc.weight"], ["module.fc.weight"], {})
        "1 missing keys: fc.weight; 1 unexpected keys: module.fc.weight; every unexpected key starts with 'module.': strip the prefix"
    """
    parts = []
    for name, keys in (("missing", list(missing)), ("unexpected", list(unexpected)),
                       ("mismatched", [f"{k} ({v})" for k, v in mismatched.items()])):
        if keys:
            more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            parts.append(f"{len(keys)} {name} keys: {', '.join(keys[:SHOWN_KEYS])}{more}")
    prefixes = {k.split(".", 1)[0] + "." for k in unexpected if "." in k}
    if missing and len(prefixes) == 1 and all(k.startswith(next(iter(prefixes))) for k in unexpected):
        parts.append(f"every unexpected key starts with {next(iter(prefixes))!r}: strip the prefix")
    return "; ".join(parts)
