"""Fixtures come from tests/python/stack_fixtures.py (shared with the other suite)."""

import sys
from pathlib import Path

_PY = str(Path(__file__).resolve().parents[1] / "python")
if _PY not in sys.path:
    sys.path.insert(0, _PY)

from stack_fixtures import *  # noqa: E402,F401,F403
