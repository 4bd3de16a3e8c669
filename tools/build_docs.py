"""Build the static HTML docs site from the notebooks in nbs/ (no Quarto needed).

    python tools/build_docs.py [--out _site]

Each notebook goes through nbdev's own docs processors (`nbdev.processors.FilterDefaults`, as `nbdev_docs`
does: `#| hide` and `#| export` cells dropped, directives stripped, `show_doc` cells added after exported
definitions) and then nbconvert's `HTMLExporter` (template 'lab'). `show_doc` cells are not executed from the
notebook: their objects are looked up in the exported module and rendered with nbdev's `show_doc`, so no
notebook code runs. Every module page ends with an "API" section listing each public name of the module
(`__all__`) with its signature, docstring and docments. Figures kept as outputs are embedded in the pages;
images linked from markdown are copied next to them. Every page has a top bar (project name, search box), a
navigation sidebar (a menu button at phone widths), a table of contents, and follows the system's dark mode.
Links on API names (nbdev writes them to the project's published site) are pointed at the pages and anchors
written here; source links carry the line numbers `inspect` finds, to settings.ini's `git_url`; object
addresses (`<function f at 0x...>`) are dropped from reprs. The CLI page shows each subcommand's `--help`,
generated from `fgflow.cli.parser()` at build time. Last, pagefind (`pip install pagefind-bin`) indexes the
site into `pagefind/`: full-text search that ships with the site and needs no network (serve the folder,
e.g. `python -m http.server -d _site`: browsers do not let pages opened as files fetch the index).
The command also refreshes `nbs/sidebar.yml` (nbdev 2's format, read by `nbdev_docs` where Quarto exists), as `nbdev_docs` does.
"""
import argparse, html, importlib, inspect, os, re, shutil, subprocess, sys, traceback
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

def notebooks(nbs=NBS):
    "The docs notebooks in nbs/, index first then by name (nbdev's sidebar order)."
    fs = [p for p in Path(nbs).glob('*.ipynb') if not p.name.startswith(('_', '.'))]
    return sorted(fs, key=lambda p: ('' if p.stem == 'index' else p.name))

def sidebar_yml(nbs=NBS):
    "`sidebar.yml` text in nbdev 2's format (what `nbdev_sidebar` writes) for the notebooks that exist."
    return 'website:\n  sidebar:\n    contents:\n' + ''.join(f'      - {p.name}\n' for p in notebooks(nbs))

def write_sidebar(nbs=NBS):
    "Write `nbs/sidebar.yml` from the notebooks that exist; return its text."
    text = sidebar_yml(nbs)
    (Path(nbs)/'sidebar.yml').write_text(text)
    return text

def page_name(nb_path): return Path(nb_path).stem + '.html'

def _title(nb, default):
    for c in nb.cells:
        if c.cell_type == 'markdown':
            m = re.match(r'^#\s+(.+)$', c.source.strip(), re.M)
            if m and c.source.lstrip().startswith('# '): return m.group(1).strip()
    return default

def _default_exp(nb):
    for c in nb.cells:
        m = re.search(r'^\s*#\|\s*default_exp\s+(\S+)', c.source, re.M) if c.cell_type == 'code' else None
        if m: return m.group(1)

def _cfg():
    from nbdev.config import get_config
    return get_config(path=ROOT)

def _lib_name(): return _cfg().lib_name

def _site_url():
    "Where nbdev publishes the project's docs (doc_host + doc_baseurl): links there are pointed at this build's pages."
    c = _cfg(); return (c.doc_host + c.doc_baseurl).rstrip('/')

def source_link(obj):
    "URL of `obj`'s definition on settings.ini's git_url, with the line number from `inspect`; None if not found."
    obj = getattr(obj, 'fget', obj)
    try:
        obj = inspect.unwrap(obj)
        rel = Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT)
        line = inspect.getsourcelines(obj)[1]
    except (TypeError, OSError, ValueError): return None
    c = _cfg()
    return f'{c.git_url}/blob/{c.branch}/{rel.as_posix()}#L{line}'

def readable(r:str) -> str:
    "A repr without memory addresses: `<function f at 0x..>` -> f, `<X object at 0x..>` -> <X>."
    r = re.sub(r'<(?:built-in )?(?:function|method|bound method) ((?:<[^<>]*>|[^\s<>])+) at 0x[0-9a-fA-F]+>', r'\1', r)
    r = re.sub(r'<([\w.]+) object at 0x[0-9a-fA-F]+>', r'<\1>', r)
    return re.sub(r' at 0x[0-9a-fA-F]+', '', r)

def _is_doc_obj(obj): return inspect.isroutine(obj) or inspect.isclass(obj) or isinstance(obj, property)

def _doc_md(obj, name):
    "nbdev's show_doc markdown for a function or class (signature, docstring, docments); name and value otherwise."
    from nbdev.showdoc import show_doc, BasicMarkdownRenderer
    md = None
    if _is_doc_obj(obj):
        try: md = show_doc(obj, name=name, renderer=BasicMarkdownRenderer)._repr_markdown_()
        except Exception: md = None
    if md:
        md = re.sub(r'\)\{[^}]*target=[^}]*\}', ')', md)  # drop Quarto's link attributes
        url = source_link(obj)                            # nbdev's own link has no line number (#LNone)
        return re.sub(r'\[source\]\([^)]*\)', f'[source]({url})' if url else '', md)
    return f'### {name}\n\n```python\n{name} = {_short_repr(obj, 300)}\n```\n'

def _short_repr(obj, n=60):
    try: r = readable(repr(obj))
    except Exception: r = f'<{type(obj).__name__}>'
    r = ' '.join(r.split())
    return r if len(r) <= n else r[:n-1] + '…'

def _anchor(name, kind='doc'): return f'{kind}-' + re.sub(r'[^A-Za-z0-9_]+', '-', name)

def _summary(obj):
    "One line for the API table: the docstring's first line, or the type and value of a constant."
    if _is_doc_obj(obj):
        doc = inspect.getdoc(obj) or ''
        kind = 'class' if inspect.isclass(obj) else 'function'
        return kind, (doc.strip().splitlines() or [''])[0]
    return type(obj).__name__, f'`{_short_repr(obj)}`'

def api_section(mod, shown=()):
    "Markdown cells for the module's API: a table of every public name, then the docs of those not shown above."
    names = getattr(mod, '__all__', None) or [n for n in vars(mod) if not n.startswith('_')]
    rows = []
    for n in names:
        kind, summ = _summary(getattr(mod, n))
        summ = summ.replace('|', '\\|').replace('\n', ' ')
        rows.append(f'| <a id="{_anchor(n, "api")}" href="#{_anchor(n)}">{n}</a> | {kind} | {summ} |')
    cells = [nbformat.v4.new_markdown_cell(f'## API\n\nPublic names of `{mod.__name__}` ({len(names)}).\n\n'
                                           '| name | kind | summary |\n|---|---|---|\n' + '\n'.join(rows))]
    rest = [n for n in names if n not in shown]
    if rest: cells.append(nbformat.v4.new_markdown_cell('### Not shown above' if len(rest) < len(names) else '### Reference'))
    for n in rest:
        cells.append(nbformat.v4.new_markdown_cell(f'<a id="{_anchor(n)}"></a>\n\n' + _doc_md(getattr(mod, n), n)))
    return cells

def process(nb_path):
    "nbdev-process one notebook for the docs: returns (notebook, title, module or None)."
    from execnb.nbio import read_nb
    from nbdev.processors import FilterDefaults, exec_show_docs, insert_warning, add_fold
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    nb = read_nb(nb_path)
    title = _title(nb, Path(nb_path).stem)
    modname = _default_exp(nb)
    mod = importlib.import_module(f'{_lib_name()}.{modname}') if modname else None
    fd = FilterDefaults()
    # no execution (exec_show_docs), no Quarto-only markup (frontmatter raw cell, warning comment, code-fold)
    skip = (exec_show_docs, insert_warning, add_fold, FrontmatterProc)
    NBProcessor(nb=nb, procs=[p for p in fd.procs() if p not in skip]).process()
    out, shown = [], set()
    for c in nb.cells:
        src = c.get('source')
        if not src: continue
        if c.cell_type == 'code' and re.search(r'^show_doc\(', src, re.M):
            for call in re.findall(r'^show_doc\((.+)\)\s*$', src, re.M):
                nm = call.split(',')[0].strip()
                ns = dict(vars(mod)) if mod else {}
                try: obj = eval(nm, ns)
                except Exception as e: raise RuntimeError(f'show_doc({nm}): not found in module {mod and mod.__name__}: {e}')
                out.append(nbformat.v4.new_markdown_cell(f'<a id="{_anchor(nm)}"></a>\n\n' + _doc_md(obj, nm)))
                shown.add(nm)
            continue
        opts = {k.strip(): v.strip() for k, v in re.findall(r'^\s*#\|\s*([\w-]+):\s*(\S+)', src, re.M)}
        if opts.get('include') == 'false': continue  # Quarto cell options, honoured as Quarto would
        outputs = [] if opts.get('output') == 'false' else c.get('outputs', [])
        src = '\n'.join(l for l in src.splitlines() if not re.match(r'^\s*#\|', l)).strip('\n')
        if opts.get('echo') == 'false': src = ''
        if not src and not outputs: continue
        if c.cell_type == 'code':
            cell = nbformat.v4.new_code_cell(src, outputs=[nbformat.from_dict(o) for o in outputs])
            if not src: cell.metadata['tags'] = ['remove_input']
            out.append(cell)
        elif c.cell_type == 'markdown': out.append(nbformat.v4.new_markdown_cell(src))
    if mod is not None and callable(getattr(mod, 'parser', None)) and modname == 'cli': out += cli_help_cells(mod)
    if mod is not None: out += api_section(mod, shown)
    res = nbformat.v4.new_notebook(cells=out, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                                                        'language_info': {'name': 'python'}})
    return res, title, mod

CSS = """
:root { --fgf-bg: #ffffff; --fgf-fg: #1d2733; --fgf-side: #f4f6f8; --fgf-line: #dde1e8; --fgf-hover: #e3e8ee;
  --fgf-accent: #2c6fbb; --fgf-code: #f5f5f5; --fgf-top-h: 52px; }
#search .pagefind-ui { --pagefind-ui-scale: 0.7; --pagefind-ui-primary: var(--fgf-accent); --pagefind-ui-text: var(--fgf-fg);
  --pagefind-ui-background: var(--fgf-bg); --pagefind-ui-border: var(--fgf-line); --pagefind-ui-tag: var(--fgf-hover);
  --pagefind-ui-border-width: 1px; --pagefind-ui-border-radius: 6px; }
@media (prefers-color-scheme: dark) {
  :root { --fgf-bg: #16191d; --fgf-fg: #d8dde3; --fgf-side: #1e2228; --fgf-line: #343a42; --fgf-hover: #2b3139;
    --fgf-accent: #6ea8ec; --fgf-code: #22272e;
    --jp-layout-color0: #16191d; --jp-layout-color1: #16191d; --jp-layout-color2: #22272e; --jp-layout-color3: #343a42;
    --jp-content-font-color0: #eef1f4; --jp-content-font-color1: #d8dde3; --jp-content-font-color2: #b8c0c8;
    --jp-content-font-color3: #9aa3ad; --jp-ui-font-color0: #eef1f4; --jp-ui-font-color1: #d8dde3;
    --jp-ui-font-color2: #b8c0c8; --jp-content-link-color: #8ab4f8; --jp-border-color0: #343a42;
    --jp-border-color1: #343a42; --jp-border-color2: #2b3139; --jp-cell-editor-background: #22272e;
    --jp-cell-editor-border-color: #343a42; --jp-rendermime-table-row-background: #1e2228;
    --jp-rendermime-table-row-hover-background: #2b3139; --jp-rendermime-error-background: #3a1e1e;
    --jp-mirror-editor-keyword-color: #7fc8ff; --jp-mirror-editor-atom-color: #a5b4fc;
    --jp-mirror-editor-number-color: #9ee6a0; --jp-mirror-editor-def-color: #82aaff;
    --jp-mirror-editor-variable-color: #d8dde3; --jp-mirror-editor-variable-2-color: #a5c8ff;
    --jp-mirror-editor-variable-3-color: #9ee6a0; --jp-mirror-editor-punctuation-color: #a5c8ff;
    --jp-mirror-editor-property-color: #a5c8ff; --jp-mirror-editor-operator-color: #d7a4ff;
    --jp-mirror-editor-comment-color: #8b9bb0; --jp-mirror-editor-string-color: #f0a27a;
    --jp-mirror-editor-string-2-color: #f0a27a; --jp-mirror-editor-meta-color: #d7a4ff;
    --jp-mirror-editor-qualifier-color: #9ee6a0; --jp-mirror-editor-builtin-color: #9ee6a0;
    --jp-mirror-editor-bracket-color: #b8c0c8; --jp-mirror-editor-tag-color: #7fc8ff;
    --jp-mirror-editor-attribute-color: #a5c8ff; --jp-mirror-editor-header-color: #7fc8ff;
    --jp-mirror-editor-quote-color: #9ee6a0; --jp-mirror-editor-link-color: #8ab4f8;
    --jp-mirror-editor-error-color: #ff8080; }
  main.fgf-main img { background: #ffffff; }
}
html { scroll-padding-top: calc(var(--fgf-top-h) + 8px); }
body.fgf { margin: 0; background: var(--fgf-bg); color: var(--fgf-fg); }
header.fgf-top { position: fixed; top: 0; left: 0; right: 0; height: var(--fgf-top-h); z-index: 30; display: flex;
  align-items: center; gap: 14px; padding: 0 16px; background: var(--fgf-side); border-bottom: 1px solid var(--fgf-line);
  font-family: system-ui, sans-serif; box-sizing: border-box; }
header.fgf-top .brand { font-weight: 700; font-size: 20px; color: var(--fgf-fg); text-decoration: none; white-space: nowrap; }
header.fgf-top .fgf-menu { display: none; font-size: 22px; line-height: 1; background: none; color: var(--fgf-fg);
  border: 1px solid var(--fgf-line); border-radius: 6px; padding: 4px 9px; cursor: pointer; }
#search { flex: 1; max-width: 520px; margin-left: auto; position: relative; }
#search .pagefind-ui__drawer { position: absolute; left: 0; right: 0; max-height: 75vh; overflow-y: auto; z-index: 40;
  background: var(--fgf-bg); border: 1px solid var(--fgf-line); border-radius: 6px; padding: 0 12px; }
#search .pagefind-ui__drawer:empty, #search .pagefind-ui__drawer:not(:has(*)) { display: none; }
nav.fgf-nav { position: fixed; top: var(--fgf-top-h); left: 0; bottom: 0; width: 230px; overflow-y: auto; padding: 16px 12px;
  background: var(--fgf-side); border-right: 1px solid var(--fgf-line); font-family: system-ui, sans-serif; font-size: 14px;
  z-index: 20; box-sizing: border-box; transition: transform .2s; }
nav.fgf-nav ul { list-style: none; padding: 0; margin: 0; }
nav.fgf-nav li a { display: block; padding: 5px 8px; border-radius: 4px; color: var(--fgf-fg); text-decoration: none; }
nav.fgf-nav li a:hover { background: var(--fgf-hover); }
nav.fgf-nav li a.current { background: var(--fgf-accent); color: white; }
main.fgf-main { margin: var(--fgf-top-h) 0 0 230px; max-width: 1100px; padding: 8px 24px; box-sizing: border-box; }
main.fgf-main a { color: var(--fgf-accent); }
main.fgf-main table { border-collapse: collapse; }
main.fgf-main th, main.fgf-main td { border: 1px solid var(--fgf-line); padding: 3px 8px; }
.jp-RenderedMarkdown pre, .jp-RenderedText pre { background: var(--fgf-code); padding: 6px 10px; border-radius: 4px; overflow-x: auto; }
.jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
details.fgf-toc { font-family: system-ui, sans-serif; font-size: 13px; border: 1px solid var(--fgf-line);
  border-radius: 6px; padding: 6px 10px; margin: 10px 0; background: var(--fgf-side); }
details.fgf-toc summary { font-weight: 600; cursor: pointer; }
details.fgf-toc ul { list-style: none; padding-left: 0; margin: 6px 0 0; }
details.fgf-toc li.l3 { padding-left: 12px; }
details.fgf-toc a { color: var(--fgf-fg); text-decoration: none; display: block; padding: 2px 0; }
details.fgf-toc a:hover { color: var(--fgf-accent); }
@media (min-width: 1280px) {
  main.fgf-main { margin-right: 250px; }
  details.fgf-toc { position: fixed; top: calc(var(--fgf-top-h) + 12px); right: 12px; width: 220px; margin: 0;
    max-height: calc(100vh - var(--fgf-top-h) - 40px); overflow-y: auto; box-sizing: border-box; }
}
@media (max-width: 800px) {
  header.fgf-top .fgf-menu { display: block; }
  header.fgf-top { gap: 8px; padding: 0 8px; }
  nav.fgf-nav { transform: translateX(-100%); visibility: hidden; }
  body.nav-open nav.fgf-nav { transform: none; visibility: visible; box-shadow: 2px 0 12px rgba(0,0,0,.25); }
  main.fgf-main { margin-left: 0; padding: 8px 12px; }
}
"""

JS = """
window.addEventListener('DOMContentLoaded', () => {
  document.querySelector('.fgf-menu').addEventListener('click', () => document.body.classList.toggle('nav-open'));
  const toc = document.querySelector('details.fgf-toc');
  if (toc && window.matchMedia('(min-width: 1280px)').matches) toc.open = true;
  if (typeof PagefindUI === 'undefined') return;   // opened without the index (build without pagefind)
  const ui = new PagefindUI({element: '#search', showSubResults: true, showImages: false, resetStyles: false,
                             baseUrl: new URL('.', location.href).pathname});
  const q = new URLSearchParams(location.search).get('q');
  if (q) ui.triggerSearch(q);
});
"""

def _nav(pages, current):
    items = ''.join(f'<li><a href="{html.escape(p)}"{" class=current" if p == current else ""}>{html.escape(t)}</a></li>'
                    for p, t in pages)
    return f'<nav class="fgf-nav" aria-label="pages"><ul>{items}</ul></nav>'

def _top():
    name = html.escape(_lib_name())
    return (f'<header class="fgf-top"><button class="fgf-menu" aria-label="pages">&#9776;</button>'
            f'<a class="brand" href="index.html">{name}</a><div id="search" role="search"></div></header>')

def toc(body):
    "A table of contents of the page's h2/h3 headings (ids from nbconvert), or '' if it has fewer than two."
    hs = [(int(l), i, re.sub(r'<[^>]+>', '', t).replace('¶', '').strip())
          for l, i, t in re.findall(r'<h([23]) id="([^"]+)"[^>]*>(.*?)</h\1>', body, re.S)]
    if len(hs) < 2: return ''
    items = ''.join(f'<li class="l{l}"><a href="#{html.escape(i)}">{html.escape(t)}</a></li>' for l, i, t in hs)
    return f'<details class="fgf-toc" data-pagefind-ignore><summary>On this page</summary><ul>{items}</ul></details>'

def cli_help_cells(mod):
    "Markdown cells with the `--help` of the command and of each subcommand, from `mod.parser()` now."
    import argparse
    p = mod.parser()
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = [('', p)] + [(n, sp) for a in subs for n, sp in a.choices.items()]
    old = os.environ.get('COLUMNS'); os.environ['COLUMNS'] = '100'
    try: helps = [(n, readable(sp.format_help())) for n, sp in parsers]
    finally:
        if old is None: os.environ.pop('COLUMNS', None)
        else: os.environ['COLUMNS'] = old
    cells = [nbformat.v4.new_markdown_cell('## Command-line help\n\nThe `--help` of `fgflow` and of each subcommand, '
                                           'generated from `fgflow.cli.parser()` when this page was built.')]
    for n, h in helps:
        cmd = ' '.join(['fgflow', n]).strip()
        cells.append(nbformat.v4.new_markdown_cell(f'### `{cmd} --help`\n\n```text\n{h.rstrip()}\n```'))
    return cells

def _ids(body): return set(re.findall(r'\sid="([^"]+)"', body))

def relink(body, pages, modpages, ids):
    """Point links to the project's published site at the pages written here: `<module>.html#name` ->
    the module's page and the anchor of `name` there (compared without case, as nbdev lowercases it). A link
    whose name has no anchor here goes to the page; one to a module without a page is dropped (text kept)."""
    site = re.escape(_site_url())
    def anchor(page, frag):
        low = {i.lower(): i for i in ids.get(page, ())}
        for cand in (frag, 'doc-' + frag, 'api-' + frag, frag.replace('.', '-'), 'doc-' + frag.replace('.', '-')):
            if cand.lower() in low: return low[cand.lower()]
    def fix(m):
        path, frag = m.group(2).lstrip('/'), m.group(3) or ''
        page = path or 'index.html'
        if page not in pages: page = modpages.get(Path(page).stem)
        if page is None: return m.group(5)
        a = anchor(page, frag) if frag else None
        return f'<a href="{page}{"#" + a if a else ""}"{m.group(4)}>{m.group(5)}</a>'
    return re.sub(rf'<a href="({site})(/[^"#]*)?(?:#([^"]*))?"([^>]*)>(.*?)</a>', fix, body, flags=re.S)

def pagefind(out, log=print):
    "Index the site with pagefind (the `pagefind-bin` package) into `out/pagefind`."
    try: import pagefind_bin
    except ImportError: raise RuntimeError('search index: pagefind is missing (pip install pagefind-bin)')
    r = subprocess.run([str(pagefind_bin.get_executable()), '--site', str(out)], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'pagefind failed: {r.stderr or r.stdout}')
    log(f'search index: {out/"pagefind"}')

def _copy_local_images(body, nb_dir, out):
    "Copy images that markdown links relatively (e.g. index_files/x.png) next to the page."
    for src in re.findall(r'<img[^>]+src="([^"]+)"', body):
        if re.match(r'^(data:|https?:|/)', src): continue
        s = (nb_dir/src).resolve()
        if not s.is_file(): raise FileNotFoundError(f'image {src} linked from a notebook is missing ({s.name})')
        (out/src).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(s, out/src)

def _readable_outputs(nb):
    "Outputs as nbconvert wants them (strings, not lists of lines) and without memory addresses."
    for c in nb.cells:
        for o in c.get('outputs', []):
            for k, v in o.get('data', {}).items():
                if isinstance(v, list): v = o['data'][k] = ''.join(v)
                if k.startswith('text/'): o['data'][k] = readable(v)
            if isinstance(o.get('text'), list): o['text'] = ''.join(o['text'])
            if 'text' in o: o['text'] = readable(o['text'])

def _page(body, title, pages, current):
    "nbconvert's page inside the site's frame: top bar with search, sidebar, table of contents, searchable main."
    body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(title)} – {html.escape(_lib_name())}</title>', body, count=1, flags=re.S)
    head = (f'<style>{CSS}</style>\n<link href="pagefind/pagefind-ui.css" rel="stylesheet">\n'
            f'<script src="pagefind/pagefind-ui.js"></script>\n<script>{JS}</script>\n</head>')
    body = body.replace('</head>', head, 1)
    frame = f'{_top()}\n{_nav(pages, current)}\n<main class="fgf-main" data-pagefind-body>\n{toc(body)}'
    body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m.group(1)}>\n{frame}', body, count=1)
    body = body.replace('</body>', '</main>\n</body>', 1)
    return re.sub(r'<body class="', '<body class="fgf ', body, count=1)

def build(out=ROOT/'_site', nbs=NBS, log=print, search=True):
    "Build the site into `out` (and its search index unless `search=False`); returns {page: title}. Raises RuntimeError naming every notebook that failed."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    nbps = notebooks(nbs)
    done, failed = [], []
    for p in nbps:
        try: done.append((p, *process(p)))
        except Exception as e: failed.append((p.name, ''.join(traceback.format_exception_only(type(e), e)).strip()))
    pages = [(page_name(p), t) for p, _, t, _ in done]
    # nbdev links a module's names to <site>/<notebook name without its number>.html
    modpages = {re.sub(r'^\d+[a-z]?_', '', p.stem): page_name(p) for p, *_ in done}
    modpages |= {mod.__name__.split('.')[-1]: page_name(p) for p, _, _, mod in done if mod is not None}
    exp = HTMLExporter(template_name='lab')
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'remove_input'}), enabled=True)
    bodies, written = {}, {}
    for p, nb, title, mod in done:
        try:
            _readable_outputs(nb)
            body, _ = exp.from_notebook_node(nb, resources={'metadata': {'name': title}})
            body = _page(body, title, pages, page_name(p))
            _copy_local_images(body, p.parent, out)
            bodies[page_name(p)] = (body, title, mod)
        except Exception as e: failed.append((p.name, ''.join(traceback.format_exception_only(type(e), e)).strip()))
    if failed:
        raise RuntimeError('could not convert ' + ', '.join(n for n, _ in failed) + ':\n' +
                           '\n'.join(f'  {n}: {m}' for n, m in failed))
    ids = {n: _ids(b) for n, (b, _, _) in bodies.items()}
    for name, (body, title, mod) in bodies.items():
        (out/name).write_text(relink(body, set(bodies), modpages, ids), encoding='utf-8')
        written[name] = title
        log(f'wrote {out/name}  ({title}{", API of " + mod.__name__ if mod else ""})')
    if search: pagefind(out, log)
    return written

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default=str(ROOT/'_site'), help='output folder (default: _site in the repository)')
    p.add_argument('--no-sidebar', action='store_true', help="don't refresh nbs/sidebar.yml (nbdev_docs refreshes it too)")
    a = p.parse_args(argv)
    sb = NBS/'sidebar.yml'
    if not a.no_sidebar and (not sb.exists() or sb.read_text() != sidebar_yml()):
        write_sidebar(); print(f'wrote {(NBS/"sidebar.yml").relative_to(ROOT)}')
    try: w = build(a.out)
    except RuntimeError as e: print(f'error: {e}', file=sys.stderr); return 1
    print(f'{len(w)} page(s) in {a.out}; open {Path(a.out)/"index.html"}')
    return 0

if __name__ == '__main__': sys.exit(main())
