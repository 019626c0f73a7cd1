"""numerics.strategies in a user's own test file, outside the toolkit's test setup: the toolkit's
tests/conftest.py loads profiles without a deadline, a user's file does not.  A test file written
the way a user writes one runs in a subprocess (``--noconftest``, its own directory), with an
example that takes 300 ms the first time it sees a size (a cold cache, like the first exact
computation at a new d on a busy machine): with ``settings.load_profile("cotgd")`` it passes;
without, hypothesis' default 200 ms deadline fails it (which shows the profile is what fixes it)."""
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

import numerics.strategies as strategies

REPO = Path(__file__).resolve().parents[2]

USER_TEST = '''
import time

import numpy as np
from hypothesis import given, settings

from numerics import gd_iterates
from numerics.strategies import gd_problems
{load}
SEEN = set()


@given(gd_problems(max_d=3, max_n=6, max_k=4, with_sigma=False))
def test_gd_contracts_on_stable_prompts(p):
    d = p.X.shape[0]
    if d not in SEEN:              # the first example of each size is slow (a cold cache)
        SEEN.add(d)
        time.sleep(0.3)
    w = gd_iterates(p.X, p.y, p.eta, p.k)
    assert np.all(np.isfinite(w))
'''


def run_user_test(tmp_path, load: str) -> subprocess.CompletedProcess:
    path = tmp_path / "test_mine.py"
    path.write_text(USER_TEST.format(load=load), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("HYPOTHESIS_PROFILE", None)
    for name in ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "BUILDKITE"):
        env.pop(name, None)        # hypothesis itself drops the deadline on CI; a user's laptop is not CI
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
                           "-W", "ignore", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_profile_is_registered_without_deadline():
    profile = settings.get_profile(strategies.PROFILE)
    assert strategies.PROFILE == "cotgd"
    assert profile.deadline is None
    assert profile.max_examples == settings.get_profile("default").max_examples


def test_user_test_file_passes_with_the_profile(tmp_path):
    done = run_user_test(tmp_path, 'settings.load_profile("cotgd")')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_user_test_file_without_the_profile_hits_the_deadline(tmp_path):
    done = run_user_test(tmp_path, "")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert "deadline" in (done.stdout + done.stderr).lower()
