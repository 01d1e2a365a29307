"""Where ``prepare`` puts each file, relative to its output folder.

The one definition of the layout: the prepare runner writes it, the evaluation reads it.
"""

from __future__ import annotations

LAYOUT = {
    "crops": "crops/{image_id}.png",
    "landmarks": "landmarks/{image_id}.json",
    "masked": "masked/{mask_type}/{image_id}.png",
    "holes": "holes/{mask_type}/{image_id}.png",
}


def prepared_path(kind: str, image_id: str, mask_type: str = "") -> str:
    """Relative path of one prepared file (``kind`` is a key of :data:`LAYOUT`)."""
    return LAYOUT[kind].format(image_id=image_id, mask_type=mask_type)
