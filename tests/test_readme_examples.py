"""The short examples of README.md and docs/reproduce.md run as written, and the figures those
pages quote are what the code prints now (scripts/readme_figures.py --check).

An example is a fenced block whose line before the fence is a marker:

- ``<!-- example: run -->``: a ```python block runs in a fresh namespace with the repository
  as the working directory; a ```bash block runs each command (``\\`` continues a line,
  ``#`` starts a comment); a ```console block runs the lines that start with ``$ ``. A command
  must be ``siri ...`` or ``python ...``; both run with this test's Python, offline.
- ``<!-- example: run tiny [TEXT=ROLE ...] -->``: the same, with tiny stand-ins the test builds
  (never downloaded). Each ``TEXT=ROLE`` replaces the literal TEXT in the block by a role's
  path: MODEL (a saved tiny Qwen2 with its tokenizer), DATA (a jsonl of ``prompt``/``answer``
  rows), CONFIG (a tiny 6-step training config on MODEL and DATA), OUT (a fresh directory
  that does not exist yet). A python block also starts with ``model`` (MODEL loaded with
  transformers), ``tokenizer``, ``prompt_token_ids`` (two prompts), ``eos`` and ``cap`` (8).

docs/CONTRIBUTING.md says the same for authors."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PAGES = [REPO / "README.md", REPO / "docs" / "reproduce.md"]
MARKER = re.compile(r"<!-- example: run( tiny)?((?: \S+=[A-Z]+)*) -->")
LANGUAGES = ("python", "bash", "sh", "console")
ROLES = ("MODEL", "DATA", "CONFIG", "OUT")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

sys.path.insert(0, str(REPO / "scripts"))
import readme_figures  # noqa: E402


@dataclass(frozen=True)
class Example:
    """One marked block: where it is, its fence language, its text and how it runs."""

    page: str
    line: int
    language: str
    code: str
    tiny: bool
    substitutions: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def extract(text: str, page: str) -> list[Example]:
    """The marked examples of a page; ValueError, naming the line, for a malformed marker."""
    lines, examples = text.splitlines(), []
    for i, line in enumerate(lines):
        if not line.startswith("<!-- example:"):
            continue
        where = f"{page}:{i + 1}"
        match = MARKER.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"{where}: malformed marker {line!r}; expected <!-- example: run --> or "
                             "<!-- example: run tiny [TEXT=ROLE ...] -->")
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        language = fence[3:].strip()
        if not fence.startswith("```") or language not in LANGUAGES:
            raise ValueError(f"{where}: an example marker must be followed by a ```python, ```bash or ```console "
                             f"fence on the next line, found {fence!r}")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{where}: the example's fence is never closed")
        substitutions = tuple(tuple(s.rsplit("=", 1)) for s in match.group(2).split())
        for _, role in substitutions:
            if role not in ROLES:
                raise ValueError(f"{where}: unknown role {role!r}; known: {', '.join(ROLES)}")
        if substitutions and not match.group(1):
            raise ValueError(f"{where}: TEXT=ROLE substitutions need `run tiny`")
        examples.append(Example(page, i + 1, language, "\n".join(lines[i + 2:end]) + "\n", bool(match.group(1)),
                                substitutions))
    return examples


def commands(example: Example) -> list[list[str]]:
    """The argv of each command of a shell or console example."""
    if example.language == "console":
        text = "\n".join(line[2:] for line in example.code.splitlines() if line.startswith("$ "))
    else:
        text = example.code
    argvs = []
    for line in text.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] not in ("siri", "python", "python3"):
            raise ValueError(f"{example.name}: a run example's commands start with siri or python, not {argv[0]!r}")
        argvs.append([sys.executable, "-m", "siri", *argv[1:]] if argv[0] == "siri" else [sys.executable, *argv[1:]])
    return argvs


def page_examples() -> list[Example]:
    return [e for page in PAGES for e in extract(page.read_text(), str(page.relative_to(REPO)))]


EXAMPLES = page_examples()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny stand-ins: the trainer tests' workspace (a model, a jsonl, a config)."""
    from training_run import make_workspace

    root = make_workspace(tmp_path_factory.mktemp("readme"))
    return {"MODEL": root / "model", "DATA": root / "train.jsonl", "CONFIG": root / "config.yaml"}


def tiny_namespace(model_dir: Path) -> dict:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = ["What is 3 + 4?", "What is 12 + 30?"]
    return {"model": model, "tokenizer": tokenizer, "eos": tokenizer.eos_token_id, "cap": 8,
            "prompt_token_ids": [tokenizer(p)["input_ids"] for p in prompts]}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example, request, tmp_path, monkeypatch):
    code, namespace = example.code, {"__name__": "__readme__"}
    if example.tiny:
        roles = {**request.getfixturevalue("tiny"), "OUT": tmp_path / "out"}
        for text, role in example.substitutions:
            code = code.replace(text, str(roles[role]))
        if example.language == "python":
            namespace.update(tiny_namespace(roles["MODEL"]))
    monkeypatch.chdir(REPO)
    if example.language == "python":
        exec(compile(code, example.name, "exec"), namespace)
        return
    env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    argvs = commands(Example(example.page, example.line, example.language, code, example.tiny, ()))
    assert argvs, f"{example.name}: no command"
    for argv in argvs:
        out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{example.name}: {shlex.join(argv[1:])} failed:\n{out.stderr[-3000:]}"


def test_the_pages_mark_their_short_examples():
    by_language = {lang: [e for e in EXAMPLES if e.language == lang] for lang in LANGUAGES}
    assert len(by_language["python"]) >= 7 and by_language["bash"] and by_language["console"]
    assert any(e.tiny for e in EXAMPLES)
    assert {e.page for e in EXAMPLES} == {"README.md", "docs/reproduce.md"}


@pytest.mark.parametrize("text, message", [
    ("<!-- example: runs -->\n```python\nx = 1\n```\n", "malformed marker"),
    ("<!-- example: run -->\n\n```python\nx = 1\n```\n", "followed by a ```python"),
    ("<!-- example: run -->\n```yaml\nx: 1\n```\n", "followed by a ```python"),
    ("<!-- example: run -->\n```python\nx = 1\n", "never closed"),
    ("<!-- example: run tiny a=WEIGHTS -->\n```bash\nsiri info\n```\n", "unknown role 'WEIGHTS'"),
    ("<!-- example: run a=MODEL -->\n```bash\nsiri info\n```\n", "need `run tiny`"),
])
def test_a_malformed_marker_names_its_line(text, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        extract("intro\n" + text, "PAGE.md")
    assert str(error.value).startswith("PAGE.md:2: ")


def test_commands_and_substitutions_are_read_as_written():
    text = ("<!-- example: run tiny runs/x/step_1=MODEL aime24=/d/a.parquet=DATA -->\n```bash\n"
            "siri eval runs/x/step_1 --data aime24=/d/a.parquet \\\n    --n 4   # four samples\n\n"
            "python -c 'print(1)'\n```\n<!-- example: run -->\n```console\n$ siri info\nsome output\n```\n")
    shell, console = extract(text, "P.md")
    assert shell.tiny and shell.substitutions == (("runs/x/step_1", "MODEL"), ("aime24=/d/a.parquet", "DATA"))
    assert commands(shell) == [[sys.executable, "-m", "siri", "eval", "runs/x/step_1", "--data", "aime24=/d/a.parquet",
                                "--n", "4"], [sys.executable, "-c", "print(1)"]]
    assert commands(console) == [[sys.executable, "-m", "siri", "info"]]
    with pytest.raises(ValueError, match="start with siri or python, not 'make'"):
        commands(extract("<!-- example: run -->\n```bash\nmake test\n```\n", "P.md")[0])


# ---- figures: scripts/readme_figures.py ----------------------------------------------------------

def test_the_figures_are_what_the_code_prints():
    out = subprocess.run([sys.executable, "scripts/readme_figures.py", "--check"], cwd=REPO, capture_output=True,
                         text=True, timeout=600, env={**os.environ, **OFFLINE})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_a_figure_is_rewritten_between_its_markers_only():
    text = ("a <!-- figures:n -->1.0 GiB<!-- /figures:n --> b\n<!-- figures:t -->\nold\n<!-- /figures:t -->\n"
            "again <!-- figures:n -->2.0 GiB<!-- /figures:n -->\n")
    assert readme_figures.figure_names(text) == ["n", "t", "n"]
    assert readme_figures.current(text) == {"n": "2.0 GiB", "t": "\nold\n"}
    assert readme_figures.render(text, {"n": "3.5 GiB", "t": "\nnew\n"}) == (
        "a <!-- figures:n -->3.5 GiB<!-- /figures:n --> b\n<!-- figures:t -->\nnew\n<!-- /figures:t -->\n"
        "again <!-- figures:n -->3.5 GiB<!-- /figures:n -->\n")


@pytest.mark.parametrize("text, message", [
    ("<!-- figures:a -->x", "<!-- figures:a --> is never closed"),
    ("x<!-- /figures:a -->", "does not pair with nothing"),
    ("<!-- figures:a --><!-- figures:b --><!-- /figures:b --><!-- /figures:a -->", "the open figures:a"),
])
def test_unpaired_figure_markers_are_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        readme_figures.figure_names(text, "PAGE.md")


def test_the_check_fails_on_a_stale_figure_and_names_it(tmp_path, monkeypatch, capsys):
    page = tmp_path / "page.md"
    page.write_text("The pool: <!-- figures:cuda-graphs-1.5b -->9.99 GiB<!-- /figures:cuda-graphs-1.5b -->.\n")
    monkeypatch.setattr(readme_figures, "REPO", tmp_path)
    monkeypatch.setattr(readme_figures, "FILES", [page])
    monkeypatch.setattr(readme_figures, "FIGURES", {"cuda-graphs-1.5b": lambda: "0.75 GiB"})
    assert readme_figures.main(["--check"]) == 1
    assert "page.md: figures that differ from what the code prints: cuda-graphs-1.5b" in capsys.readouterr().out
    assert "9.99 GiB" in page.read_text()
    assert readme_figures.main([]) == 0
    assert page.read_text() == "The pool: <!-- figures:cuda-graphs-1.5b -->0.75 GiB<!-- /figures:cuda-graphs-1.5b -->.\n"
    assert readme_figures.main(["--check"]) == 0
    page.write_text("<!-- figures:typo -->x<!-- /figures:typo -->\n")
    with pytest.raises(SystemExit):
        readme_figures.main(["--check"])
    assert "marks a figure named 'typo'" in capsys.readouterr().err
