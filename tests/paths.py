"""Paths the tests share: the repository root and the fixtures folder."""

from pathlib import Path

REPO = Path(__file__).parents[1]
FIXTURES = REPO / "tests" / "fixtures"
