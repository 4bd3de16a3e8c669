"Project-level checks: README in sync with nbs/index.ipynb, CI runs README's test command, nbdev sync."
import re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import make_readme


def readme_commands():
    return re.findall(r'```sh\n(.+?)\n```', (ROOT/'README.md').read_text())


def test_readme_in_sync_with_index():
    assert make_readme.main(['--check']) == 0


def test_readme_starts_with_the_two_commands():
    cmds = readme_commands()
    assert 'fgflow demo' in cmds[0]
    assert 'nbdev_test' in cmds[1] and 'pytest' in cmds[1]
    assert (ROOT/'README.md').read_text().index(cmds[1]) < 1200


def test_ci_runs_readme_test_command():
    ci = (ROOT/'.ci'/'run').read_text().splitlines()
    assert readme_commands()[1] in ci


def test_install_pins_torch_first():
    sh = (ROOT/'tools'/'install.sh').read_text()
    assert sh.index('torch==') < sh.index('-e .')


@pytest.mark.skipif(shutil.which('nbdev_export') is None, reason='nbdev not installed')
def test_notebooks_clean_and_exported(tmp_path):
    "nbdev_export leaves the library unchanged and nbdev_clean leaves nothing to strip (nbdev-ci's checks)."
    dst = tmp_path/'repo'
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns('.git', '*.egg-info', '__pycache__', '.scratch', '_proc', '_docs', '_site', '.hypothesis', '.pytest_cache'))
    def snapshot():
        return {p.relative_to(dst): p.read_bytes() for d in ('fgflow', 'nbs') for p in (dst/d).rglob('*')
                if p.is_file() and '__pycache__' not in p.parts and p.suffix in ('.py', '.ipynb')}
    before = snapshot()
    for cmd in (['nbdev_export'], ['nbdev_clean']):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    after = snapshot()
    changed = sorted(str(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f'run nbdev_export and nbdev_clean, then commit: {changed}'
