"""The direction of imports between the toolkit's parts, written once (``LAYERS``) and checked on every module.

A module may import modules of its own layer and of the layers below it, never above: the pipeline knows nothing
of the model, the model draws pictures but never opens the interactive viewer, and the commands sit on top. Every
``import hipnet...`` and ``from hipnet... import`` counts, at module level or inside a function (a deferred import is
still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"api": "hipnet", "pipeline": "hipnet.pipeline", "model": "hipnet.model", "viz": "hipnet.viz",
           "cli": "hipnet.cli", "data_manifests": "hipnet.data_manifests"}

#: lowest first; a module's layer is the first whose prefixes match it (the longest prefix wins).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("data", ("hipnet.data_manifests",)),
    # the pipeline follows the data: its vocabulary, the sources, the pure stages, the store, the readers that
    # turn sources into frames, the runner that writes stores, and the embedded dataset built on all of them
    ("pipeline.core", ("hipnet.pipeline", "hipnet.pipeline.core")),
    ("pipeline.sources", ("hipnet.pipeline.sources",)),
    ("pipeline.stages", ("hipnet.pipeline.stages",)),
    ("pipeline.store", ("hipnet.pipeline.store",)),
    ("pipeline.readers", ("hipnet.pipeline.readers",)),
    ("pipeline.runner", ("hipnet.pipeline.runner",)),
    ("pipeline.embedded", ("hipnet.pipeline.embedded",)),
    ("pictures", ("hipnet.viz", "hipnet.viz.render", "hipnet.viz.scene")),
    ("model", ("hipnet.model",)),
    ("viewer", ("hipnet.viz.viewer", "hipnet.viz.panels", "hipnet.viz.posing", "hipnet.viz.sources")),
    ("api", ("hipnet",)),
    ("cli", ("hipnet.cli",)),
]


def layer_of(module: str) -> int:
    """Index in ``LAYERS`` of ``module`` (the layer with the longest matching prefix)."""
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = i, len(p)
    if best is None:
        raise ValueError(f"{module} is in no layer of LAYERS")
    return best


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = f
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "hipnet" or m.startswith("hipnet.")}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import that points up the layers."""
    out = []
    for importer, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(importer):
                out.append(f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    return out


def test_every_import_points_down_the_layers():
    edges = {name: imports(path) for name, path in modules().items()}
    assert {"hipnet", "hipnet.pipeline.store.zarrstore", "hipnet.model.hipnet", "hipnet.viz.viewer",
            "hipnet.cli.train"} <= set(edges)
    assert violations(edges) == []


def test_the_check_finds_an_import_that_points_up():
    assert violations({"hipnet.pipeline.store.zarrstore": {"hipnet.model.data", "hipnet.pipeline.runner.driver"},
                       "hipnet.model.report": {"hipnet.viz.render"},
                       "hipnet.model.apps": {"hipnet.viz.viewer"}}) == [
        "hipnet.model.apps (model) imports hipnet.viz.viewer (viewer)",
        "hipnet.pipeline.store.zarrstore (pipeline.store) imports hipnet.model.data (model)",
        "hipnet.pipeline.store.zarrstore (pipeline.store) imports hipnet.pipeline.runner.driver (pipeline.runner)",
    ]
