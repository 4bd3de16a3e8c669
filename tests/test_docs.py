"The static docs site (tools/build_docs.py): every notebook a page, links and images resolve, nav, API, search, CLI help, browser checks."
import base64, functools, http.server, importlib, inspect, json, re, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_SRC = {p: p.read_text() for p in (ROOT/'fgflow').glob('*.py')}   # the sources before the build imports them
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


def test_no_link_to_the_published_site_or_LNone(site):
    "API-name links point at pages and anchors written here (checked by the link test), never at the published site."
    _, _, pages, _ = site
    own = build_docs._site_url()
    n_api = 0
    for name, pg in pages.items():
        assert not [u for u in pg.links if u.startswith(own)], (name, [u for u in pg.links if u.startswith(own)][:3])
        assert not [u for u in pg.links if 'LNone' in u], name
        n_api += sum(bool(re.match(r'^\d\d_\w+\.html#', u)) for u in pg.links)
    assert n_api > 50                                          # cross-page links on API names survived as local links


def test_source_links_have_real_line_numbers(site):
    _, _, pages, _ = site
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    n = 0
    for name, pg in pages.items():
        for u in pg.links:
            if not u.startswith(cfg.git_url + '/blob/'): continue
            m = re.fullmatch(re.escape(f'{cfg.git_url}/blob/{cfg.branch}/') + r'(\S+?)#L(\d+)', u)
            assert m, (name, u)
            f = ROOT/m.group(1)
            if f.read_text() != _SRC.get(f): continue           # changed by someone while these tests ran
            lines = f.read_text().splitlines()
            assert re.match(r'\s*(@|def |async def |class )', lines[int(m.group(2)) - 1]), (name, u, lines[int(m.group(2)) - 1])
            n += 1
    assert n > 100


def test_no_object_addresses(site):
    out, _, pages, _ = site
    for name in pages:
        text = (out/name).read_text(encoding='utf-8')
        assert not re.search(r' at 0x[0-9a-fA-F]{4,}', text), (name, re.search(r'.{60} at 0x[0-9a-fA-F]+', text))


def test_search_index_ships_with_the_site(site):
    out, _, pages, _ = site
    assert (out/'pagefind'/'pagefind.js').is_file() and (out/'pagefind'/'pagefind-ui.js').is_file()
    entry = json.loads((out/'pagefind'/'pagefind-entry.json').read_text())
    assert sum(lang['page_count'] for lang in entry['languages'].values()) == len(pages)
    assert list((out/'pagefind'/'fragment').glob('*.pf_fragment'))


def test_every_page_has_top_bar_search_toc_dark_mode(site):
    out, _, pages, _ = site
    for name in pages:
        text = (out/name).read_text(encoding='utf-8')
        assert '<header class="fgf-top">' in text and '<div id="search"' in text and 'pagefind/pagefind-ui.js' in text, name
        assert '<main class="fgf-main" data-pagefind-body>' in text and '@media (prefers-color-scheme: dark)' in text, name
        assert '<details class="fgf-toc"' in text or len(re.findall(r'<h[23] id=', text)) < 2, name


def test_cli_page_shows_generated_help(site):
    "Each subcommand's --help, as fgflow.cli.parser() prints it now (generated at build time, not pasted)."
    out, _, _, _ = site
    import argparse, html as html_
    from fgflow.cli import parser
    text = html_.unescape(re.sub(r'<[^>]+>', '', (out/'07_cli.html').read_text(encoding='utf-8')))
    p = parser()
    subs = [n for a in p._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices]
    assert 'usage: fgflow' in text and len(subs) >= 4
    for n in subs:
        assert f'usage: fgflow {n}' in text, n
        assert f'fgflow {n} --help' in text, n


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def _serve(folder):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f'http://127.0.0.1:{srv.server_address[1]}/'


# A page of the test (not of the site) that opens pages in iframes of given sizes, reads their layout, opens the
# menu; and types a search into index.html (?q=), then follows the result that names the anchor.
_PROBE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const res = {}, jobs = JOBS, term = TERM;
function rect(d, w, s) { const e = d.querySelector(s); if (!e) return null; const b = e.getBoundingClientRect(), cs = w.getComputedStyle(e);
  return {left: b.left, right: b.right, width: b.width, height: b.height,
          shown: cs.visibility !== 'hidden' && cs.display !== 'none' && b.right > 0 && b.width > 0 && b.height > 0}; }
function done() { if (Object.keys(res).length === jobs.length + 1) document.getElementById('out').textContent = JSON.stringify(res); }
for (const [key, page, w, h] of jobs) {
  const f = document.createElement('iframe'); f.width = w; f.height = h; f.src = page; document.body.appendChild(f);
  f.onload = () => setTimeout(() => { const d = f.contentDocument, win = f.contentWindow, r = s => rect(d, win, s);
    const o = {nav: r('nav.fgf-nav'), top: r('header.fgf-top'), main: r('main.fgf-main'), search: r('#search input'),
               toc: r('details.fgf-toc'), tocOpen: !!(d.querySelector('details.fgf-toc') || {}).open, menu: r('.fgf-menu'),
               brand: (d.querySelector('header.fgf-top .brand') || {}).textContent, overflow: d.documentElement.scrollWidth - win.innerWidth};
    const st = d.createElement('style'); st.textContent = '* { transition: none !important; }'; d.head.appendChild(st);
    d.querySelector('.fgf-menu').click();             // (no transition: virtual time need not run animations)
    setTimeout(() => { o.navMenu = r('nav.fgf-nav'); res[key] = o; done(); }, 1000); }, 800);
}
const s = document.createElement('iframe'); s.width = 1280; s.height = 900; s.src = 'index.html?q=' + encodeURIComponent(term);
document.body.appendChild(s);
let tries = 0;   // each poll waits on a real fetch: virtual time stands still meanwhile, while pagefind loads and searches
s.onload = () => { if (res.search) return; const poll = async () => {
  const d = s.contentDocument, msg = (d.querySelector('.pagefind-ui__message') || {}).textContent || '';
  const links = [...d.querySelectorAll('.pagefind-ui__result-link')].map(a => a.getAttribute('href'));
  const n = (msg.match(/^(\d+) result/) || [])[1];      // "N results for ..." once the search is done
  const complete = n !== undefined && d.querySelectorAll('.pagefind-ui__result').length == +n && !d.querySelector('.pagefind-ui__loading');
  if (!complete && ++tries < 3000) { await fetch('index.html?poll=' + tries, {cache: 'no-store'}); return poll(); }
  res.search = {links}; const go = links.find(u => u.endsWith('#' + term)) || links[0];
  if (!go) return done();
  s.onload = () => { const w = s.contentWindow, id = decodeURIComponent(w.location.hash.slice(1)), t = id && s.contentDocument.getElementById(id);
    res.search.landed = {path: w.location.pathname, id, text: t ? t.textContent : null}; done(); };
  s.contentWindow.location.href = go; };
  poll(); };
</script></body></html>"""

SIZES = {'desktop': (1280, 900), 'phone': (390, 844)}
BROWSER_PAGES = ('index.html', '03_features.html', '07_cli.html')


def _chromium(tmp_path, *args):
    cmd = ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           f'--user-data-dir={tmp_path/"profile"}', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(shutil.which('chromium') is None, reason='chromium not installed (apt-get install chromium)')
def test_browser_layout_and_search(site, tmp_path):
    "Three pages at desktop and phone widths (layout read in the browser, screenshots), and a search that lands on its page."
    out, _, _, _ = site
    jobs = [[f'{p}@{k}', p, *wh] for p in BROWSER_PAGES for k, wh in SIZES.items()]
    (out/'_probe.html').write_text(_PROBE.replace('JOBS', json.dumps(jobs)).replace('TERM', json.dumps('fgf_measure')))
    srv, url = _serve(out)
    try:
        r = _chromium(tmp_path, '--dump-dom', '--virtual-time-budget=30000', url + '_probe.html')
        m = re.search(r'<pre id="out">(.*?)</pre>', r.stdout, re.S)
        assert m and m.group(1) != 'pending', r.stdout[-500:] + r.stderr[-500:]
        res = json.loads(m.group(1))
        shots = {}
        for p in BROWSER_PAGES:
            for k, (w, h) in SIZES.items():
                png = tmp_path/f'{p[:-5]}_{k}.png'
                _chromium(tmp_path, f'--screenshot={png}', f'--window-size={w},{h}', '--virtual-time-budget=3000', url + p)
                shots[p, k] = png
    finally: srv.shutdown()
    for p in BROWSER_PAGES:
        d, ph = res[f'{p}@desktop'], res[f'{p}@phone']
        for o in (d, ph):                                       # top bar with the project's name and a search box
            assert o['top']['shown'] and o['brand'] == 'fgflow' and o['search']['shown'] and o['overflow'] <= 0, (p, o)
            assert o['toc'] and o['toc']['shown'], p
        assert d['nav']['shown'] and d['nav']['width'] >= 200 and d['main']['left'] >= d['nav']['right'], (p, d)
        assert not d['menu']['shown'] and d['tocOpen'] and d['toc']['left'] >= d['main']['right'], (p, d)
        assert not ph['nav']['shown'] and ph['menu']['shown'] and ph['main']['left'] < 40, (p, ph)   # sidebar collapsed
        assert ph['navMenu']['shown'] and not ph['tocOpen'], (p, ph)                                    # the menu opens it
        import matplotlib.image as mpimg, numpy as np
        for k, (w, h) in SIZES.items():
            img = mpimg.imread(shots[p, k])[..., :3]
            assert img.shape[:2] == (h, w), (p, k, img.shape)
            assert 0.01 < (img.min(axis=2) < 0.5).mean() < 0.5, (p, k)          # dark glyphs, not a blank page
            band = img[5:45, :].mean(axis=2)                                    # the top bar is shaded, not white
            assert ((band > 0.85) & (band < 0.985)).mean() > 0.2, (p, k)
    hits = res['search']['links']
    assert hits and hits[0].lstrip('/').split('#')[0] == '04_flow.html', hits          # fgf_measure's own page first
    landed = res['search']['landed']
    assert landed['path'].endswith('/04_flow.html') and landed['id'] == 'fgf_measure' and 'fgf_measure' in landed['text'], landed
