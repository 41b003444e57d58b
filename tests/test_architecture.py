"""The house: one-way imports between the pipeline's stages, no cycles, small modules.

The import graph is read from the source (``ast``), counting imports inside functions, and a
module's closure includes the packages above it (importing ``a.b.c`` runs ``a`` and ``a.b``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resnet_deploy"
MAX_LINES = 700
STAGES = ("resnet_deploy.model", "resnet_deploy.onnx_export", "resnet_deploy.precision", "resnet_deploy.engine",
          "resnet_deploy.runners")
CONSUMERS = ("resnet_deploy.pipeline", "resnet_deploy.api", "resnet_deploy.bench", "resnet_deploy.deploy",
             "resnet_deploy.cli", "resnet_deploy.compare", "resnet_deploy.evaluate", "resnet_deploy.predict",
             "resnet_deploy.tuning")


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "templates" in parts:  # the edge bundle's own scripts, not package modules
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path):
    """``(module imported from, names imported)`` for every import statement, function-local ones included."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - (node.level - 1)] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            yield base, [a.name for a in node.names]


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for base, names in imports(name, path):
            for t in [base] + [f"{base}.{n}" for n in names]:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += graph.get(m, ())
    return seen


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


def test_the_graph_sees_function_local_and_relative_imports():
    """The checker itself: it must see what it claims to (else every test below passes vacuously)."""
    assert "resnet_deploy.runners.base" in GRAPH["resnet_deploy.runners.tensorrt"]
    assert "resnet_deploy._native.trt" in GRAPH["resnet_deploy.runners.tensorrt"]
    assert "resnet_deploy.runners.torch_runner" not in GRAPH["resnet_deploy.runners"]  # loaded by name (registry)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert "x" in closure("x.y.z", {"x.y.z": set()})


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_no_module_over_700_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage_or_a_consumer(stage):
    mine = [m for m in GRAPH if within(m, stage)]
    bad = {m: sorted(t for t in GRAPH[m] if not within(t, stage) and any(within(t, s) for s in STAGES + CONSUMERS))
           for m in mine}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"{stage} imports other stages: {bad}"


@pytest.mark.parametrize("module", ["resnet_deploy.runners", "resnet_deploy.runners.tensorrt", "resnet_deploy.runners.ort",
                                    "resnet_deploy.runners.openvino", "resnet_deploy.runners.torch_runner"])
def test_runners_never_reach_the_builder(module):
    reached = closure(module, GRAPH)
    assert not [m for m in reached if within(m, "resnet_deploy.engine")], sorted(reached)


@pytest.mark.parametrize("module", ["resnet_deploy.compare", "resnet_deploy.evaluate", "resnet_deploy.predict"])
def test_comparison_evaluation_and_prediction_use_runners_only(module):
    reached = closure(module, GRAPH)
    for stage in STAGES[:-1]:  # model, export, precision, engine
        assert not [m for m in reached if within(m, stage)], (stage, sorted(reached))
    assert not [m for m in reached if within(m, "resnet_deploy.pipeline")]


def test_only_the_pipeline_chains_the_stages():
    """Who calls the stage functions that make an artifact: the pipeline alone."""
    makers = {"resnet_deploy.onnx_export": "export_onnx", "resnet_deploy.precision": "make_precision_onnx",
              "resnet_deploy.engine": "build_or_reuse_engine"}
    for module, path in modules().items():
        if module in ("resnet_deploy.pipeline",) or any(within(module, m) for m in makers):
            continue
        for base, names in imports(module, path):
            for stage, maker in makers.items():
                assert not (within(base, stage) and maker in names), f"{module} calls {stage}.{maker} itself"


def test_cli_modules_do_not_import_each_other():
    cli = [m for m in GRAPH if within(m, "resnet_deploy.cli") and m not in ("resnet_deploy.cli", "resnet_deploy.cli.__main__")]
    for m in cli:
        others = [t for t in GRAPH[m] if within(t, "resnet_deploy.cli") and t not in ("resnet_deploy.cli.common", m)]
        assert not others, (m, others)


# ---- parameters and public faces (issue 28) ----

BOUNDARY = ("resnet_deploy.cli", "resnet_deploy.api")  # keyword options mirror the commands' flags
MAX_PARAMETERS = 10
# A stage or service package is reached from outside through its __init__'s public names only.
PUBLIC_FACES = ("resnet_deploy.model", "resnet_deploy.precision", "resnet_deploy.engine", "resnet_deploy.runners",
                "resnet_deploy.tuning", "resnet_deploy.deploy", "resnet_deploy.bench")
BENCHMARKS = PACKAGE.parent / "benchmarks"


def functions(path: Path):
    """``(name, parameter names)`` of every function and method in a file (``self``/``cls`` left out)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            yield node.name, params


def public_names(package: str) -> set[str]:
    """The package's ``__all__``, read from its ``__init__.py`` (nothing imported)."""
    init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
    body = ast.parse(init.read_text()).body
    assigned = {t.id: node.value for node in body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    value = assigned.get("__all__")
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "sorted":
        value = assigned.get(value.args[0].id)  # ``__all__ = sorted(_WHERE)``: a lazy package's name -> module table
        return {ast.literal_eval(k) for k in value.keys}
    return {ast.literal_eval(e) for e in value.elts if isinstance(e, ast.Constant)} if value is not None else set()


def private_reaches(module: str, path: Path) -> list[str]:
    """Imports in ``module`` that reach into a public-face package other than its own past its public names."""
    bad = []
    for base, names in imports(module, path):
        for package in PUBLIC_FACES:
            if within(module, package) or not within(base, package):
                continue
            if base != package:
                bad.append(f"{base} ({', '.join(names) or 'module'})")
            else:
                hidden = sorted(set(names) - public_names(package))
                bad += [f"{package}.{n} (not in __all__)" for n in hidden]
    return bad


def test_no_function_takes_more_than_10_parameters():
    """The rest belongs in an option object the stage owns (QuantizeOptions, TuningOptions, ExportOptions, ...)."""
    many = {f"{m}.{name}": len(params) for m, p in modules().items() if not any(within(m, b) for b in BOUNDARY)
            for name, params in functions(p) if len(params) > MAX_PARAMETERS}
    assert not many, many


def test_the_model_travels_as_one_reference():
    """``weights``, ``num_classes`` and ``seed`` are one ModelRef past the boundary: only the factory
    (``ModelRef.of``) and the README's ``create_model`` take them apart."""
    apart = [f"{m}.{name}" for m, p in modules().items() if not any(within(m, b) for b in BOUNDARY)
             for name, params in functions(p) if {"weights", "num_classes", "seed"} <= set(params)]
    assert sorted(apart) == ["resnet_deploy.model.create_model", "resnet_deploy.model.ref.of"], apart


def test_the_checkers_see_what_they_claim():
    assert "make_precision_onnx" in public_names("resnet_deploy.precision")
    assert private_reaches("resnet_deploy.x", Path(__file__)) == []  # (this file imports no package of the toolkit)
    fake = PACKAGE.parent / "tests" / "_reach_probe.py"
    try:
        fake.write_text("from resnet_deploy.precision.calib import load_calibration\n"
                        "from resnet_deploy.precision import make_precision_onnx, calibration_digest, _private\n"
                        "def f(a, b, c, d, e, f, g, h, i, j, k): pass\n")
        assert private_reaches("probe", fake) == ["resnet_deploy.precision.calib (load_calibration)",
                                                  "resnet_deploy.precision._private (not in __all__)"]
        assert [len(p) for _, p in functions(fake)] == [11]
    finally:
        fake.unlink()


def test_consumers_use_the_public_faces_of_packages():
    bad = {m: r for m, p in modules().items() if (r := private_reaches(m, p))}
    assert not bad, bad


def test_benchmarks_use_the_public_faces_of_packages():
    scripts = sorted(BENCHMARKS.rglob("*.py"))
    assert scripts
    bad = {p.relative_to(BENCHMARKS).as_posix(): r for p in scripts if (r := private_reaches("benchmarks", p))}
    assert not bad, bad
