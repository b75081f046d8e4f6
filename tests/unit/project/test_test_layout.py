"""The test tree has no ``__init__.py`` files, so pytest imports each test module by its
basename: two files with the same name anywhere under ``tests/`` stop the whole run at
collection. This check names them before CI does."""

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]


def test_no_two_test_modules_share_a_basename() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test modules sharing a basename (pytest cannot collect both): {clashes}"
