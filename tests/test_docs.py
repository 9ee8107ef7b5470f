"""The docs stay readable and true to the code: closed code fences, links that resolve, and every
`alter …` / `moire …` command quoted in README.md or docs/ naming a real subcommand and real options.

What is checked for a quoted command: the subcommand path exists (`alter data bbc`, `moire melt`),
every `--option` it uses is an option of that subcommand, and `--help` of each subcommand named
exits 0. Arguments are not executed (their files need not exist).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^\s*(```+|~~~+)")
LINK = re.compile(r"\]\(([^)\s]+)\)|\bsrc=\"([^\"]+)\"")
TOOLS = ("alter", "moire")


def _fenced_blocks(text: str) -> tuple[list[list[str]], str | None]:
    """Code blocks of a Markdown text (first item of each: the info string), and a problem: an
    unclosed block, or a fence with an info string met inside a block (```` ```bash ```` cannot close
    a block, so the block swallows the text up to the next bare fence), or None."""
    blocks, current, opener, start = [], None, None, 0
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m and current is None:
            opener, start = m.group(1), n
            current = [line.strip()[len(opener):].strip()]
        elif m and current is not None:
            rest = line.strip()[len(m.group(1)):].strip()
            if m.group(1)[0] == opener[0] and len(m.group(1)) >= len(opener) and not rest:
                blocks.append(current)
                current, opener = None, None
            elif rest:
                return blocks, f"the fence opened at line {start} is not closed before line {n} ({line.strip()})"
            else:
                current.append(line)
        elif current is not None:
            current.append(line)
    return blocks, (f"the fence opened at line {start} is never closed" if current is not None else None)


def _commands(text: str) -> list[list[str]]:
    """Tokenised `alter …`/`moire …` command lines quoted in the code blocks (continuations joined)."""
    out = []
    for lang, *block in _fenced_blocks(text)[0]:
        prompt_only = lang not in ("bash", "sh", "shell", "console")  # output blocks: `$ ` lines only
        joined, buf = [], ""
        for line in block:
            if prompt_only and not buf and not line.lstrip().startswith("$ "):
                continue
            buf += line.rstrip()
            if buf.endswith("\\"):
                buf = buf[:-1] + " "
                continue
            joined.append(buf)
            buf = ""
        for line in joined:
            line = re.sub(r"^\s*\$\s+", "", line).strip()
            line = line.split(" #")[0]
            for part in re.split(r"\|\s*|&&|;", line):
                part = part.strip()
                part = re.sub(r"^(accelerate launch .*?-m (alter|moire)_cli)", r"\2", part)
                part = re.sub(r"^python -m (alter|moire)_cli", r"\1", part)
                if part.split(" ", 1)[0] in TOOLS:
                    try:
                        out.append(shlex.split(part))
                    except ValueError:
                        out.append(part.split())
    return out


def _app(tool: str):
    if tool == "alter":
        from alter_cli.cli import app
    else:
        from moire_cli.cli import app
    return typer.main.get_command(app)


def _resolve(tool: str, argv: list[str]):
    """(subcommand path, its command object, the remaining tokens); typer may vendor its own click,
    so groups are recognised by their `commands` mapping."""
    cmd = _app(tool)
    path = [tool]
    rest = list(argv)
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        assert sub is not None, f"`{' '.join(path)} {name}`: no such subcommand"
        cmd, path = sub, path + [name]
    return path, cmd, rest


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_fences_closed_and_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    _, unclosed = _fenced_blocks(text)
    assert unclosed is None, f"{doc.name}: {unclosed}"
    outside = FENCE.sub("", text)
    for m in LINK.finditer(outside):
        target = (m.group(1) or m.group(2)).split("#")[0]
        if not target or re.match(r"^[a-z]+:", target):
            continue
        assert (doc.parent / target).exists(), f"{doc.name}: link to {target} does not resolve"


def test_every_quoted_command_parses() -> None:
    seen: dict[tuple[str, ...], object] = {}
    problems = []
    for doc in DOCS:
        for argv in _commands(doc.read_text(encoding="utf-8")):
            tool, args = argv[0], argv[1:]
            try:
                path, cmd, rest = _resolve(tool, args)
            except AssertionError as exc:
                problems.append(f"{doc.name}: {exc}")
                continue
            known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            for tok in rest:
                if tok.startswith("--"):
                    opt = tok.split("=", 1)[0]
                    if opt not in known:
                        problems.append(f"{doc.name}: `{' '.join(path)}` has no option {opt}")
            seen[tuple(path)] = cmd
    assert not problems, "\n".join(problems)
    assert ("moire", "phonons") in seen and ("alter", "train-stage1") in seen
    runner = CliRunner()
    for path in sorted(seen):
        from importlib import import_module

        app = import_module(f"{path[0]}_cli.cli").app
        result = runner.invoke(app, [*path[1:], "--help"])
        assert result.exit_code == 0, f"`{' '.join(path)} --help` exited {result.exit_code}: {result.output[-300:]}"


def test_checker_sees_an_unclosed_fence_and_a_bad_command() -> None:
    assert "never closed" in _fenced_blocks("a\n```bash\nmoire phonons x\n")[1]
    assert "not closed before line 4" in _fenced_blocks("```text\nx\n## H\n```bash\nmoire melt\n```\n")[1]
    assert _commands("```text\nmoire phonons: done\n$ moire melt c.yaml\n```\n") == [["moire", "melt", "c.yaml"]]
    assert _fenced_blocks("```text\nx\n```\n")[1] is None
    cmds = _commands("```bash\n$ moire phonons c.yaml \\\n  --out d --overwrite   # note\n```\n")
    assert cmds == [["moire", "phonons", "c.yaml", "--out", "d", "--overwrite"]]
    with pytest.raises(AssertionError, match="no such subcommand"):
        _resolve("moire", ["no-such-command"])
