"""Every recipe, with each of its --conf files, hands only known settings to the shared stage scripts.

A recipe that sets a variable the shared scripts no longer know (``--student-epochs`` after the switch to
``--fractions``) fails when it reaches stage 4, after hours of stages 0-3; this catches it at once:
``--stage 99 --stop-stage 99`` parses every setting of data_stages.sh and kd_stages.sh and runs nothing.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.parent.name for p in (REPO / "recipes").glob("*/run.sh") if p.parent.name != "shared")
CASES = [(r, None) for r in RECIPES] + [
    (r, c.relative_to(REPO)) for r in RECIPES for c in sorted((REPO / "recipes" / r / "conf").glob("*.sh"))
]


def _run(recipe: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [str(REPO / "recipes" / recipe / "run.sh"), "--stage", "99", "--stop-stage", "99", *args]
    return subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("recipe", "conf"), CASES, ids=[f"{r}-{c.name if c else 'default'}" for r, c in CASES]
)
def test_recipe_settings_are_known_to_the_shared_stages(recipe, conf):
    proc = _run(recipe, *(["--conf", str(conf)] if conf else []))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_an_unknown_setting_is_refused():
    proc = _run("synth_digits", "--student-epochs", "3")
    assert proc.returncode != 0
    assert "unknown option --student-epochs" in proc.stderr


def _declared(script: Path) -> set[str]:
    """The settings a stage script declares: its top-level ``name=value`` lines."""
    return set(re.findall(r"^([a-z_][a-z0-9_]*)=", script.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("conf", [c for _, c in CASES if c], ids=lambda c: str(c))
def test_every_conf_setting_is_declared_by_a_stage_script(conf):
    """A conf file's variable that no script declares would be silently ignored (the shell accepts it)."""
    recipe = REPO / conf.parent.parent
    known = set()
    for script in (
        recipe / "run.sh",
        REPO / "recipes/shared/data_stages.sh",
        REPO / "recipes/shared/kd_stages.sh",
    ):
        known |= _declared(script)
    unknown = sorted(_declared(REPO / conf) - known)
    assert not unknown, f"{conf} sets {unknown}, which no stage script declares"
