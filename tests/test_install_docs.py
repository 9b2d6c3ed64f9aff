"""The install commands of README.md and docs/ work as written: rasft-trl is not on PyPI (issue 25).

Rule, for every install command in README.md and docs/**/*.md (`pip install`, `pip3 install`, `python -m pip
install`, `uv pip install`, `pipx install`, `uv add`, `uv tool install`, in code blocks and inline code alike):

1. Installing rasft-trl *by name* without extras (`pip install rasft-trl`, `rasft_trl==0.1`, `pipx install
   rasft-trl`, `uv add rasft-trl`) is refused: it is a first install, and it looks the package up on PyPI, where it
   is not published.
2. An extras install by name, `pip install 'rasft-trl[X]'`, is allowed, because pip resolves it against the
   installed distribution and only installs the extra's dependencies (scripts/check_wheel.sh runs it in a fresh
   environment built from the wheel). It must name extras that pyproject.toml defines (or the placeholder `X`), carry
   no version, and come at or after a stated local install in the same document: a local install command (`pip
   install -e .`, `pip install '.[demo]'`, `pip install dist/rasft_trl-*.whl`) or a link to the install
   instructions (README's `#install`, `quickstart.md#install-by-hand`).
3. Local requirements (`.`, `.[dev]`, `-e .`, paths, wheels, sdists, `rasft-trl @ URL`) are always allowed.

The README also says that the package is not on PyPI and spells out the CPU build of torch, and its Quickstart stays
the two `make` commands.
"""

import glob
import os
import re
import shlex
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INSTALL = re.compile(
    r"(?:\bpython3?\s+-m\s+pip|\buv\s+pip|\bpip3?)\s+install\b(?P<pip>[^`\n]*)"
    r"|\b(?P<tool>pipx\s+install|uv\s+add|uv\s+tool\s+install)\b(?P<rest>[^`\n]*)"
)
# a shell command ends here (the rest of the line is a comment or another command)
END = re.compile(r"\s#|;|&&|\|\||\||\)")
BY_NAME = re.compile(r"^rasft[-_.]trl(?:\[(?P<extras>[^\]]*)\])?(?P<spec>.*)$", re.IGNORECASE)
# options whose value is not a requirement
VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "-d", "--dest", "--platform", "--python-version", "--report",
    "-C", "--config-settings", "--upgrade-strategy", "--only-binary", "--no-binary", "--progress-bar", "--python",
}
INSTALL_LINKS = re.compile(r"\((?:[./]*README\.md)?#install\)|quickstart\.md#install-by-hand")
PLACEHOLDERS = {"X"}


def extras_defined() -> set[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return set(tomllib.load(handle)["project"]["optional-dependencies"])


def requirements(args: str) -> list[str]:
    """The requirement arguments of one install command (options and their values dropped)."""
    args = END.split(args, maxsplit=1)[0]
    try:
        tokens = shlex.split(args)
    except ValueError:  # a quote left open, e.g. an inline command cut by the line's end
        tokens = [token.strip("'\"") for token in args.split()]
    found, skip = [], False
    for token in tokens:
        if skip:
            skip = False
            continue
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            skip = name in VALUE_OPTIONS and "=" not in token
            continue
        found.append(token)
    return found


def is_local(requirement: str) -> bool:
    return (requirement.startswith((".", "/", "~", "dist/", "file:", "git+", "http://", "https://"))
            or requirement.endswith((".whl", ".tar.gz", ".zip")) or "@" in requirement
            or "/" in requirement.split("[", 1)[0])


def check_text(text: str, defined: set[str]) -> list[str]:
    """Violations of the module's rule in one document, as 'line N: ...'."""
    problems, local_seen = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if INSTALL_LINKS.search(line):
            local_seen = True
        for match in INSTALL.finditer(line):
            tool = match.group("tool")
            reqs = requirements(match.group("pip") if tool is None else match.group("rest"))
            if any(is_local(req) for req in reqs) and tool is None:
                local_seen = True
            for req in reqs:
                named = BY_NAME.match(req)
                if named is None or is_local(req):
                    continue
                extras, spec = named.group("extras"), named.group("spec").strip()
                if tool is not None:
                    problems.append(f"line {number}: `{tool} {req}` installs rasft-trl from PyPI, where it is not "
                                    "published")
                elif extras is None:
                    problems.append(f"line {number}: `pip install {req}` is a first install from PyPI, where "
                                    "rasft-trl is not published (install from a clone or a built wheel)")
                elif spec:
                    problems.append(f"line {number}: `{req}` asks PyPI for a version of rasft-trl")
                else:
                    unknown = {e.strip() for e in extras.split(",")} - defined - PLACEHOLDERS
                    if unknown:
                        problems.append(f"line {number}: `{req}` names extras pyproject.toml lacks: {sorted(unknown)}")
                    if not local_seen:
                        problems.append(f"line {number}: `pip install {req}` adds an extra to an installed rasft-trl, "
                                        "but the document has not said how to install it (a local install command "
                                        "or a link to the install instructions must come first)")
    return problems


DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_doc_installs_rasft_trl_from_pypi(path):
    with open(path) as handle:
        problems = check_text(handle.read(), extras_defined())
    assert not problems, f"{os.path.relpath(path, ROOT)}:\n" + "\n".join(problems)


def test_the_docs_install_at_all():
    """The scan finds the commands it is meant to judge (a broken pattern would pass every document)."""
    text = "\n".join(open(path).read() for path in DOCS)
    commands = [m.group(0) for m in INSTALL.finditer(text)]
    assert any("-e" in c for c in commands) and any("dist/rasft_trl-" in c for c in commands)
    assert any("rasft-trl[" in c for c in commands)


OK = [
    "pip install -e .",
    "pip install -e '.[demo]'",
    'pip install -e ".[vllm,deepspeed]"',
    "pip install dist/rasft_trl-*.whl\npip install 'rasft-trl[demo]'",
    "python -m pip install ./dist/rasft_trl-0.1.0-py3-none-any.whl",
    "see [Install](#install); then `pip install 'rasft-trl[deepspeed]'`",
    "[Quickstart](quickstart.md#install-by-hand) ... `pip install 'rasft-trl[X]'`",
    "pip install torch --index-url https://download.pytorch.org/whl/cpu",
    "pip install 'rasft-trl @ file:///tmp/rasft_trl-0.1.0-py3-none-any.whl'",
    "pip install build && python -m build",
]
REFUSED = [
    "pip install rasft-trl",
    "`pip install rasft-trl` installs one command",
    "pip install -U rasft_trl",
    'pip install "rasft-trl[vllm]"          # vLLM for rollouts',
    "pip install -e .\npip install 'rasft-trl[demo]>=0.1'",
    "pip install -e .\npip install 'rasft-trl[vlm]'",
    "pip install 'rasft-trl[demo]'\npip install -e .",
    "pipx install rasft-trl",
    "uv add rasft-trl",
    "uv pip install 'rasft-trl==0.1.0'",
    "python3 -m pip install --index-url https://pypi.org/simple rasft-trl",
]


@pytest.mark.parametrize("text", OK)
def test_the_rule_allows(text):
    assert check_text(text, extras_defined()) == []


@pytest.mark.parametrize("text", REFUSED)
def test_the_rule_refuses(text):
    assert check_text(text, extras_defined())


def test_readme_says_how_to_install():
    readme = open(os.path.join(ROOT, "README.md")).read()
    flat = " ".join(readme.split())
    assert "not yet published on PyPI" in flat
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in flat
    assert "python -m build" in flat and "dist/rasft_trl-*.whl" in flat
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.DOTALL).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
