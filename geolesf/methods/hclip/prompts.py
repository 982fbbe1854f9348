"""Prompt templates turning class names into CLIP text prompts.

``single`` is CAT-Seg's default ensemble (one template, methods.md §1.3 "prompt ensemble single");
``vild`` the 14 ViLD templates; ``aerial`` a small set for overhead imagery (a geolesf choice, used by
``geolesf predict`` on GeoTIFF tiles only when asked with ``--option templates=aerial``). Every
template has one ``{}`` for the class name. Text embeddings of a class are kept per template (the
cost volume has one channel per template, as in CAT-Seg).
"""

from __future__ import annotations

from collections.abc import Sequence

from geolesf.errors import ConfigError

TEMPLATES: dict[str, tuple[str, ...]] = {
    "single": ("A photo of a {} in the scene.",),
    "vild": (
        "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene",
        "There is the {} in the scene", "a photo of a {} in the scene", "a photo of a small {}.",
        "a photo of a medium {}.", "a photo of a large {}.", "This is a photo of a small {}.",
        "This is a photo of a medium {}.", "This is a photo of a large {}.",
        "There is a small {} in the scene.", "There is a medium {} in the scene.",
        "There is a large {} in the scene.",
    ),
    "aerial": ("an aerial photo of {}.", "a satellite image of {}.", "an aerial view of the {}."),
}


def get_templates(name_or_list: str | Sequence[str]) -> tuple[str, ...]:
    """Templates by set name (``single``, ``vild``, ``aerial``) or an explicit list with ``{}``."""
    if isinstance(name_or_list, str):
        if name_or_list not in TEMPLATES:
            raise ConfigError(f"templates: unknown set '{name_or_list}' (known: {', '.join(TEMPLATES)})")
        return TEMPLATES[name_or_list]
    out = tuple(str(t) for t in name_or_list)
    if not out or any(t.count("{}") != 1 for t in out):
        raise ConfigError(f"templates: expected templates each holding one '{{}}', found {list(out)}")
    return out


def clean_name(name: str) -> str:
    """Benchmark class names → prompt text (``"wall-other-merged"`` → ``"wall other merged"``)."""
    return " ".join(str(name).replace("_", " ").replace("-", " ").split())


def build_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """``C·P`` prompts, class-major: prompt ``c·P + p`` is template ``p`` filled with class ``c``."""
    if not class_names:
        raise ConfigError("classes: expected at least one class name")
    return [t.format(clean_name(c)) for c in class_names for t in templates]
