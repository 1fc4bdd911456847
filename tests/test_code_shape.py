"""The code's shape, checked statically: siri/'s modules import each other without a circle
(module-level and function-level imports alike), no comment cites a tracker's item numbers,
the kernels read no environment variables, and the trainer stays the loop and its wiring."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIRI = REPO / "siri"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def siri_modules() -> dict[str, Path]:
    return {module_name(path): path for path in SIRI.rglob("*.py")}


def extension_modules() -> set[str]:
    """Compiled modules under siri/ (siri._C): leaves of the import graph."""
    return {module_name(path.with_name(path.name.split(".")[0] + ".py")) for path in SIRI.rglob("*.so")}


def imported_modules(path: Path, known: dict[str, Path]) -> set[str]:
    """The siri modules ``path`` imports anywhere in its body. ``from a import b`` names module
    ``a.b`` when that is a module, else ``a``; the implicit import of parent packages is not an
    edge (a package's own ``__init__`` importing its submodules is the usual shape)."""
    this, extensions = module_name(path), extension_modules()
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                if candidate in extensions:
                    continue
                found.add(candidate if candidate in known else source)
    return {name for name in found if name in known and name != this}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_siri_has_no_import_circle():
    known = siri_modules()
    graph = {name: imported_modules(path, known) for name, path in known.items()}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100, "the import graph looks empty"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


TEXT_SUFFIXES = {".py", ".sh", ".h", ".cuh", ".cpp", ".cu", ".txt", ".cmake", ".toml"}


def test_no_comment_cites_a_tracker_item():
    cited = []
    for folder in ("siri", "csrc", "bindings", "benchmarks", "scripts", "tests"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in TEXT_SUFFIXES and path.is_file() and path != Path(__file__).resolve():
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if re.search(r"issue [0-9]", line):
                        cited.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not cited, "\n".join(cited)


def test_the_kernels_read_no_environment():
    reads = [f"{path.relative_to(REPO)}:{number}" for path in (REPO / "csrc").rglob("*") if path.is_file()
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if "getenv" in line]
    assert not reads, reads


def test_the_trainer_is_the_loop_and_its_wiring():
    """The step's pieces live in named modules (siri/algo, siri/train); trainer.py keeps the loop."""
    lines = len((SIRI / "train" / "trainer.py").read_text().splitlines())
    assert lines <= 350, f"siri/train/trainer.py has {lines} lines"


def test_the_top_level_of_siri_is_a_map():
    """Entry points and shared helpers at the top; each subpackage names one part of the design."""
    top = sorted(path.name for path in SIRI.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_ext.py", "atomic_io.py", "cli.py", "config.py", "eval.py",
                   "export.py", "plot.py", "progress.py", "version.py"], top
