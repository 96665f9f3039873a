"""Static files served by the Django process itself (WhiteNoise), for the admin, /api/docs/ and the pages.

Files come from the apps' static folders (WHITENOISE_USE_FINDERS) and, after `collectstatic`, from
STATIC_ROOT. The demo never runs collectstatic, so a missing STATIC_ROOT is expected, not worth a warning.
"""

from __future__ import annotations

from pathlib import Path

from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    def add_files(self, root, prefix=None):
        if Path(root).is_dir():
            super().add_files(root, prefix)
