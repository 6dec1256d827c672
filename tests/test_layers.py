"""pyproxy's packages form layers: each imports only from its own layer's packages or from lower
ones (README's Layout lists them top-down). Function-level imports count too: an import that goes
up is a circle waiting to happen."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyproxy"

# Top-down. Packages (or top-level modules) on one line may import each other.
LAYERS = [
    {"__main__", "ctl", "cli", "service"},
    {"runtime"},            # the roles: master, TCP supervisor, worker
    {"mi"},                 # the management process
    {"assembly"},           # a config put together with the modules, the script compiled
    {"modules"},
    {"script", "db"},
    {"kernel"},             # loop, ipc, logs, process, shared memory
    {"tls", "certs", "myself"},
    {"config"},             # the configuration language
    {"sip"},                # sans-IO SIP
]
LEVEL = {unit: n for n, layer in enumerate(LAYERS) for unit in layer}


def unit_of(module: str) -> str | None:
    """The package (or top-level module) of a dotted pyproxy module name; None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path):
    """(line, imported pyproxy module) for every import in the file, at any depth."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name if path.name != "__init__.py" else name + ".__init__"
    package = package.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "pyproxy":
                for alias in node.names:
                    yield node.lineno, f"pyproxy.{alias.name}"
            elif target.startswith("pyproxy."):
                yield node.lineno, target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyproxy."):
                    yield node.lineno, alias.name


def test_every_package_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert units == set(LEVEL), f"packages without a layer: {units - set(LEVEL)}; gone: {set(LEVEL) - units}"


def test_imports_only_go_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = unit_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if here is None:
            continue
        for line, target in imports(path):
            there = unit_of(target)
            if there is None or there not in LEVEL:     # the package root (__version__), or a name in it
                continue
            if LEVEL[there] < LEVEL[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)
