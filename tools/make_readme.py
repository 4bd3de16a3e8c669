"""Write README.md from nbs/index.ipynb (nbdev's `nbdev_readme` needs Quarto, which is not always there).

Hidden cells (`#| hide`) are dropped, nbdev directives are stripped, code cells become fenced Python and
their text or image outputs follow. `python tools/make_readme.py --check` exits 1 when README.md is stale.
"""
import argparse, base64, hashlib, re, sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

def _directives(src):
    return {l[3:].strip().split()[0] for l in src.splitlines() if l.startswith('#|') and l[3:].strip()}

def _strip(src):
    return '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip('\n')

def render(nb_path=ROOT/'nbs'/'index.ipynb', img_dir='nbs/index_files'):
    "Markdown for README.md and the images it links, as (text, {relative path: bytes})."
    nb = nbformat.read(nb_path, as_version=4)
    parts, images = [], {}
    for cell in nb.cells:
        d = _directives(cell.source)
        if 'hide' in d: continue
        src = _strip(cell.source)
        if cell.cell_type == 'markdown':  # links relative to nbs/ become relative to the repository root
            parts.append(re.sub(r'\]\((?!https?:|/|#)([^)]+)\)', r'](nbs/\1)', src)); continue
        if cell.cell_type != 'code': continue
        if src and 'hide_input' not in d and 'echo: false' not in cell.source: parts.append(f'```python\n{src}\n```')
        if 'hide_output' in d: continue
        for out in cell.get('outputs', []):
            data = out.get('data', {})
            if out.get('output_type') == 'stream': parts.append('```\n' + ''.join(out['text']).rstrip() + '\n```')
            elif 'image/png' in data:
                raw = base64.b64decode(data['image/png'])
                name = f"{img_dir}/figure-{hashlib.sha1(raw).hexdigest()[:10]}.png"
                images[name] = raw; parts.append(f'![]({name})')
            elif 'text/markdown' in data: parts.append(''.join(data['text/markdown']))
            elif 'text/plain' in data: parts.append('```\n' + ''.join(data['text/plain']).rstrip() + '\n```')
    return '\n\n'.join(p for p in parts if p.strip()) + '\n', images

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    a = p.parse_args(argv)
    text, images = render()
    readme = ROOT/'README.md'
    stale = not readme.exists() or readme.read_text() != text or any(
        not (ROOT/k).exists() or (ROOT/k).read_bytes() != v for k, v in images.items())
    if a.check:
        if stale: print('README.md is out of date with nbs/index.ipynb: run python tools/make_readme.py'); return 1
        return 0
    readme.write_text(text)
    for k, v in images.items(): (ROOT/k).parent.mkdir(parents=True, exist_ok=True); (ROOT/k).write_bytes(v)
    print(f'wrote {readme.relative_to(ROOT)} and {len(images)} image(s)')
    return 0

if __name__ == '__main__': sys.exit(main())
