"The static docs site (tools/build_docs.py): every notebook a page, links and images resolve, nav, API, screenshot."
import base64, importlib, inspect, re, shutil, subprocess, sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs


class Page(HTMLParser):
    "Links, images, ids, the nav's links and the <title> of one HTML page."
    def __init__(self, text):
        super().__init__(); self.links, self.imgs, self.ids, self.nav = [], [], set(), []
        self.title, self._in_nav, self._in_title = '', 0, False
        self.feed(text)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
        if tag == 'nav' and 'fgf-nav' in (a.get('class') or ''): self._in_nav += 1
        if tag == 'a' and a.get('href'):
            self.links.append(a['href'])
            if self._in_nav: self.nav.append(a['href'])
        if tag == 'img': self.imgs.append(a.get('src', ''))
        if tag == 'title': self._in_title = True
    def handle_endtag(self, tag):
        if tag == 'nav' and self._in_nav: self._in_nav -= 1
        if tag == 'title': self._in_title = False
    def handle_data(self, data):
        if self._in_title: self.title += data


def _local(u): return not re.match(r'^([a-z][a-z0-9+.-]*:|#|//)', u)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build from a snapshot of nbs/ (others may save notebooks meanwhile); the tests compare against that snapshot."
    out, nbs = tmp_path_factory.mktemp('site'), tmp_path_factory.mktemp('snap')/'nbs'
    shutil.copytree(ROOT/'nbs', nbs, ignore=shutil.ignore_patterns('.*'))
    written = build_docs.build(out, nbs=nbs, log=lambda *a: None)
    pages = {p.name: Page(p.read_text(encoding='utf-8')) for p in out.glob('*.html')}
    return out, written, pages, nbs


def test_every_notebook_has_a_page_titled_like_it(site):
    out, written, pages, nbs = site
    nbs = build_docs.notebooks(nbs)
    assert {'index.ipynb'} <= {p.name for p in nbs} and len(nbs) >= 2
    assert set(pages) == {p.stem + '.html' for p in nbs}
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        h1 = next(c.source.splitlines()[0][2:].strip() for c in nb.cells if c.cell_type == 'markdown' and c.source.startswith('# '))
        assert pages[p.stem + '.html'].title.startswith(h1), (p.name, pages[p.stem + '.html'].title)
        assert written[p.stem + '.html'] == h1


def test_local_links_and_images_resolve(site):
    out, _, pages, nbs = site
    n_links = 0
    for name, pg in pages.items():
        for u in pg.links + pg.imgs:
            if not u or not _local(u): continue
            target, _, frag = u.partition('#')
            assert (out/target).is_file(), f'{name}: broken link {u}'
            if frag and target in pages: assert frag in pages[target].ids, f'{name}: no anchor {u}'
            n_links += 1
        for u in pg.imgs:
            if u.startswith('data:image/png;base64,'):
                assert base64.b64decode(u.split(',', 1)[1])[:8] == b'\x89PNG\r\n\x1a\n', name
    assert n_links > len(pages)


def test_nav_links_every_page_from_every_page(site):
    _, _, pages, nbs = site
    for name, pg in pages.items():
        assert set(pg.nav) == set(pages), (name, set(pages) ^ set(pg.nav))


def _shown_images(nb):
    "Image outputs of the cells a reader sees (not hidden, exported or `output: false`)."
    n = 0
    for c in nb.cells:
        d = {l[3:].strip() for l in c.source.splitlines() if l.startswith('#|')}
        if d & {'hide', 'export', 'exporti', 'default_exp', 'include: false', 'output: false'}: continue
        n += sum('image/png' in o.get('data', {}) for o in c.get('outputs', []))
    return n


def test_figures_are_embedded(site):
    _, _, pages, nbs = site
    for p in build_docs.notebooks(nbs):
        want = _shown_images(nbformat.read(p, as_version=4))
        got = sum(u.startswith('data:image/png') for u in pages[p.stem + '.html'].imgs)
        assert got == want, f'{p.name}: {want} figure(s) in the notebook, {got} in the page'


def test_api_section_lists_public_names(site):
    out, _, pages, nbs = site
    n_mods = n_docments = 0
    for p in build_docs.notebooks(nbs):
        modname = build_docs._default_exp(nbformat.read(p, as_version=4))
        if not modname: continue
        mod = importlib.import_module(f'fgflow.{modname}')
        text = (out/(p.stem + '.html')).read_text(encoding='utf-8')
        assert '>API<' in text or 'id="API"' in text, p.name
        for n in mod.__all__:
            assert f'api-{n}' in pages[p.stem + '.html'].ids, f'{p.name}: {n} missing from the API section'
            assert f'>{n}<' in text, (p.name, n)
        n_mods += 1
        # docstrings and docments argument comments (plain-text ones) reach the page
        from fastcore.docments import docments
        for n in mod.__all__:
            f = getattr(mod, n)
            if not inspect.isfunction(f): continue
            if f.__doc__ and re.fullmatch(r'[\w ,;()-]+', f.__doc__.strip().split('.')[0]):
                assert f.__doc__.strip().split('.')[0] in text, (p.name, n)
            for arg, c in docments(f).items():
                if c and re.fullmatch(r'[\w ,;()-]+', c): assert c in text, (p.name, n, arg, c); n_docments += 1
    assert n_mods >= 1 and n_docments > 0


def test_hidden_and_exported_cells_are_not_shown(site):
    out, _, _, nbs = site
    for p in build_docs.notebooks(nbs):
        text = (out/(p.stem + '.html')).read_text(encoding='utf-8')
        assert 'nbdev_export()' not in text and 'default_exp' not in text and '#| ' not in text, p.name


def test_sidebar_and_nbdev_yml_match_nbdev():
    "nbs/sidebar.yml and nbs/nbdev.yml are what nbdev 2's `nbdev_docs` would write, so Quarto builds the same site."
    assert (ROOT/'nbs'/'sidebar.yml').read_text() == build_docs.sidebar_yml(), \
        'nbs/sidebar.yml is stale: run python tools/build_docs.py'
    from nbdev.quarto import _nbdev_yml
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    assert (ROOT/'nbs'/'nbdev.yml').read_text() == _nbdev_yml.format(doc_path=cfg.doc_path.name, **vals)
    assert 'metadata-files: [nbdev.yml, sidebar.yml]' in (ROOT/'nbs'/'_quarto.yml').read_text()


def test_a_broken_notebook_is_named_and_fails(tmp_path, capsys):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    shutil.copy(ROOT/'nbs'/'index.ipynb', nbs/'index.ipynb')
    (nbs/'01_bad.ipynb').write_text('{"cells": [')
    with pytest.raises(RuntimeError, match=r'could not convert 01_bad\.ipynb'):
        build_docs.build(tmp_path/'site', nbs=nbs, log=lambda *a: None)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('#| default_exp no_such_module_xyz')])
    nbformat.write(nb, nbs/'01_bad.ipynb')
    with pytest.raises(RuntimeError, match=r'01_bad\.ipynb.*no_such_module_xyz'):
        build_docs.build(tmp_path/'site', nbs=nbs, log=lambda *a: None)


@pytest.mark.skipif(shutil.which('chromium') is None, reason='chromium not installed (apt-get install chromium)')
def test_index_screenshot_is_not_blank(site, tmp_path):
    out, _, _, nbs = site
    png = tmp_path/'index.png'
    cmd = ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           f'--user-data-dir={tmp_path/"profile"}', f'--screenshot={png}', '--window-size=1200,900',
           (out/'index.html').as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=60)
    assert png.is_file() and png.stat().st_size > 1000
    import matplotlib.image as mpimg
    import numpy as np
    img = mpimg.imread(png)[..., :3]
    assert img.shape[:2] == (900, 1200)
    nonwhite = (img.min(axis=2) < 0.95).mean()
    assert 0.02 < nonwhite < 0.9, nonwhite
    assert len(np.unique((img*255).astype(np.uint8).reshape(-1, 3), axis=0)) > 10
    # the sidebar (left 230 px) is shaded and the text area has dark glyphs
    assert img[:, :200].mean() < 0.99 and (img[:, 260:].min(axis=2) < 0.3).mean() > 0.001
