"""Build the static HTML docs site from the notebooks in nbs/ (no Quarto needed).

    python tools/build_docs.py [--out _site]

Each notebook goes through nbdev's own docs processors (`nbdev.processors.FilterDefaults`, as `nbdev_docs`
does: `#| hide` and `#| export` cells dropped, directives stripped, `show_doc` cells added after exported
definitions) and then nbconvert's `HTMLExporter` (template 'lab'). `show_doc` cells are not executed from the
notebook: their objects are looked up in the exported module and rendered with nbdev's `show_doc`, so no
notebook code runs. Every module page ends with an "API" section listing each public name of the module
(`__all__`) with its signature, docstring and docments. Figures kept as outputs are embedded in the pages;
images linked from markdown are copied next to them. A navigation sidebar links every page.
The command also refreshes `nbs/sidebar.yml` (nbdev 2's format, read by `nbdev_docs` where Quarto exists), as `nbdev_docs` does.
"""
import argparse, html, importlib, inspect, re, shutil, sys, traceback
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

def _lib_name():
    from nbdev.config import get_config
    return get_config(path=ROOT).lib_name

def _is_doc_obj(obj): return inspect.isroutine(obj) or inspect.isclass(obj) or isinstance(obj, property)

def _doc_md(obj, name):
    "nbdev's show_doc markdown for a function or class (signature, docstring, docments); name and value otherwise."
    from nbdev.showdoc import show_doc, BasicMarkdownRenderer
    md = None
    if _is_doc_obj(obj):
        try: md = show_doc(obj, name=name, renderer=BasicMarkdownRenderer)._repr_markdown_()
        except Exception: md = None
    if md: return re.sub(r'\)\{[^}]*target=[^}]*\}', ')', md)  # drop Quarto's link attributes
    return f'### {name}\n\n```python\n{name} = {_short_repr(obj, 300)}\n```\n'

def _short_repr(obj, n=60):
    try: r = repr(obj)
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
    if mod is not None: out += api_section(mod, shown)
    res = nbformat.v4.new_notebook(cells=out, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                                                        'language_info': {'name': 'python'}})
    return res, title, mod

CSS = """
body.fgf { margin: 0; }
nav.fgf-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 230px; overflow-y: auto; padding: 16px 12px;
  background: #f4f6f8; border-right: 1px solid #dde; font-family: system-ui, sans-serif; font-size: 14px; z-index: 10; }
nav.fgf-nav .brand { font-weight: 700; font-size: 20px; margin-bottom: 12px; display: block; color: #234; text-decoration: none; }
nav.fgf-nav ul { list-style: none; padding: 0; margin: 0; }
nav.fgf-nav li a { display: block; padding: 5px 8px; border-radius: 4px; color: #234; text-decoration: none; }
nav.fgf-nav li a:hover { background: #e3e8ee; }
nav.fgf-nav li a.current { background: #2c6fbb; color: white; }
main.fgf-main { margin-left: 254px; max-width: 1100px; padding: 8px 24px; }
main.fgf-main table { border-collapse: collapse; }
main.fgf-main th, main.fgf-main td { border: 1px solid #ccd; padding: 3px 8px; }
.jp-RenderedMarkdown pre { background: #f5f5f5; padding: 6px 10px; border-radius: 4px; }
.jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
"""

def _nav(pages, current):
    items = ''.join(f'<li><a href="{html.escape(p)}"{" class=current" if p == current else ""}>{html.escape(t)}</a></li>'
                    for p, t in pages)
    return f'<nav class="fgf-nav"><a class="brand" href="index.html">{html.escape(_lib_name())}</a><ul>{items}</ul></nav>'

def _copy_local_images(body, nb_dir, out):
    "Copy images that markdown links relatively (e.g. index_files/x.png) next to the page."
    for src in re.findall(r'<img[^>]+src="([^"]+)"', body):
        if re.match(r'^(data:|https?:|/)', src): continue
        s = (nb_dir/src).resolve()
        if not s.is_file(): raise FileNotFoundError(f'image {src} linked from a notebook is missing ({s.name})')
        (out/src).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(s, out/src)

def build(out=ROOT/'_site', nbs=NBS, log=print):
    "Build the site into `out`; returns {page: title}. Raises RuntimeError naming every notebook that failed."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    nbps = notebooks(nbs)
    done, failed = [], []
    for p in nbps:
        try: done.append((p, *process(p)))
        except Exception as e: failed.append((p.name, ''.join(traceback.format_exception_only(type(e), e)).strip()))
    pages = [(page_name(p), t) for p, _, t, _ in done]
    exp = HTMLExporter(template_name='lab')
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'remove_input'}), enabled=True)
    written = {}
    for p, nb, title, mod in done:
        try:
            for c in nb.cells:  # Jupyter stores multi-line output data as lists of lines; nbconvert wants strings
                for o in c.get('outputs', []):
                    for k, v in o.get('data', {}).items():
                        if isinstance(v, list): o['data'][k] = ''.join(v)
                    if isinstance(o.get('text'), list): o['text'] = ''.join(o['text'])
            body, _ = exp.from_notebook_node(nb, resources={'metadata': {'name': title}})
            body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(title)} – {html.escape(_lib_name())}</title>', body, count=1, flags=re.S)
            body = body.replace('</head>', f'<style>{CSS}</style>\n</head>', 1)
            body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m.group(1)}>\n{_nav(pages, page_name(p))}\n<main class="fgf-main">', body, count=1)
            body = body.replace('</body>', '</main>\n</body>', 1)
            body = re.sub(r'<body class="', '<body class="fgf ', body, count=1)
            _copy_local_images(body, p.parent, out)
            (out/page_name(p)).write_text(body, encoding='utf-8')
            written[page_name(p)] = title
            log(f'wrote {out/page_name(p)}  ({title}{", API of " + mod.__name__ if mod else ""})')
        except Exception as e: failed.append((p.name, ''.join(traceback.format_exception_only(type(e), e)).strip()))
    if failed:
        raise RuntimeError('could not convert ' + ', '.join(n for n, _ in failed) + ':\n' +
                           '\n'.join(f'  {n}: {m}' for n, m in failed))
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
