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


def test_readme_commands_make_a_virtual_environment():
    for c in readme_commands()[:2]: assert c.startswith('python3 -m venv .venv && . .venv/bin/activate && bash tools/install.sh'), c


def test_readme_states_python_version_and_what_install_does():
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    md = (ROOT/'README.md').read_text()
    assert f"Python ≥ {cfg['DEFAULT']['min_python']}" in md and 'Python 3.11 is checked' in md
    for w in ('apt-get', 'root', 'dicom3tools', 'dcmtk', 'chromium', 'FGFLOW_APT=skip', 'FGFLOW_TORCH=skip'): assert w in md, w


def test_install_asks_before_touching_the_system():
    "install.sh only runs apt-get with --dev, as root, unless FGFLOW_APT=skip; and says so before it does."
    sh = (ROOT/'tools'/'install.sh').read_text()
    apt = sh.index('apt-get install -y')
    assert sh.index('FGFLOW_APT:-}" = skip') < apt and sh.index('id -u)" = 0') < apt and sh.index('--dev') < apt
    assert sh.index('echo "installing system packages with apt-get (as root)') < apt
    r = subprocess.run(['bash', '-n', str(ROOT/'tools'/'install.sh')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dev_requirements_hold_the_optional_test_oracles():
    "Tests that would skip without a package find it in the dev requirements (a skipped test checks nothing)."
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    dev = cfg['DEFAULT']['dev_requirements'].split()
    assert 'scikit-learn' in dev and 'hypothesis' in dev and 'captum' in dev


def test_ci_runs_readme_test_command():
    ci = (ROOT/'.ci'/'run').read_text().splitlines()
    assert readme_commands()[1] in ci


def test_install_pins_torch_first():
    sh = (ROOT/'tools'/'install.sh').read_text()
    assert sh.index('torch==') < sh.index('-e .')


def test_notebooks_clean_and_exported(tmp_path):
    "nbdev_export leaves the library unchanged and nbdev_clean leaves nothing to strip (nbdev-ci's checks)."
    dst = tmp_path/'repo'
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns('.git', '.venv', 'fgflow_demo', '*.egg-info', '__pycache__', '.scratch', '_proc', '_docs', '_site', '.hypothesis', '.pytest_cache'))
    def snapshot():
        return {p.relative_to(dst): p.read_bytes() for d in ('fgflow', 'nbs') for p in (dst/d).rglob('*')
                if p.is_file() and '__pycache__' not in p.parts and p.suffix in ('.py', '.ipynb')}
    before = snapshot()
    for cmd in (['nbdev_export'], ['nbdev_clean']):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    after = snapshot()
    changed = sorted(str(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f'run nbdev_export and nbdev_clean, then commit: {changed}'
