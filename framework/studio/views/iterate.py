"""Iterate on a node: its YAML to edit, chosen rows previewed old and new, save as a new file."""
from __future__ import annotations

import asyncio

from aiohttp import web

from ...errors import SynthloomError
from ..pages import page, run_of
from ..records import index_of, shape
from ..runs import Run


async def iterate_page(request: web.Request) -> web.Response:
    run = run_of(request)
    return await _iterate(request, run, request.query.get("node", ""), None, request.query.get("ids", ""), "")


async def iterate_post(request: web.Request) -> web.Response:
    run = run_of(request)
    form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
    return await _iterate(request, run, form.get("node", ""), form.get("spec", ""), form.get("ids", ""),
                          form.get("action", "preview"))


async def _iterate(request: web.Request, run: Run, node: str, spec: str | None, ids_text: str,
                   action: str) -> web.Response:
    """The iterate page: a node's YAML to edit, records to preview, and (after a POST) both previews or the
    path of the saved copy."""
    from .. import iterate
    manifest = run.manifest()
    path = iterate.graph_file(manifest)
    raw = await asyncio.to_thread(iterate.raw_graph, path)
    nodes = list(raw["nodes"])
    node = node if node in nodes else nodes[0]
    ids = [item.strip() for item in ids_text.split(",") if item.strip()]
    if not ids and run.outputs():
        head = await asyncio.to_thread(index_of(run.path / f"{run.outputs()[0]}.jsonl").head, 0, 3)
        ids = [shape(number, line, {}, "")["key"] for number, line in head]
    text = spec if spec is not None else iterate.node_yaml(raw, node)
    results, saved, problem = None, None, None
    try:
        if action == "preview":
            results = await asyncio.to_thread(iterate.side_by_side, manifest, node, text, ids)
        elif action == "save":
            saved = str(await asyncio.to_thread(iterate.save_as, manifest, node, text))
    except SynthloomError as error:
        problem = str(error)
    return page(request, "iterate.html", title=f"{run.key} / iterate {node}", run=run, graph_path=str(path),
                nodes=nodes, node=node, spec=text, ids=", ".join(ids), results=results, saved=saved,
                problem=problem)
