"""What a scoring worker imports (issue 20: RSS <= 400 MB): the worker's modules, with
xgboost imported for scoring, leave out scipy.stats (~70 MB with what it pulls in: the
drift test's one function is computed without it), and torch, isotree, scikit-learn, pandas."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_IMPORTED = ("scipy.stats", "scipy.optimize", "torch", "isotree", "sklearn", "pandas")

PROBE = """
import json, sys
from ja4_core.detectors.xgb import import_for_scoring
import_for_scoring()
import stream_scorer.app, stream_scorer.cli, stream_scorer.agents, stream_scorer.live_drift
from ja4_core.detectors import warm_up
warm_up.warm_up()
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'scipy', 'torch', 'isotree', 'sklearn', 'pandas'})))
"""


def test_the_worker_imports_no_scipy_stats_torch_isotree_sklearn_or_pandas() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = sorted({name for name in NOT_IMPORTED for m in loaded if m == name or m.startswith(name + ".")})
    assert heavy == [], heavy
