"""The shell examples of README.md and docs/*.md, as claims a test can check.

The convention the docs follow (and ``tests/test_docs.py`` enforces):

* In a ```` ```sh ```` block, ``#`` lines right after a command are what it
  prints (stdout and stderr together, one ``#`` line per output line).
  Whitespace is not significant (``ls`` prints columns on a terminal, lines
  into a pipe) and ``...`` stands for any text (a pid, a random UUID, the
  shell's prefix of an error). A comment on a command's own line, or one
  after a blank line, is a remark.
* Every ``fakemdev ...`` line in any code block (fenced or indented) must be
  accepted by the real command line once its placeholders (``MOUNTPOINT``,
  ``UUID``, ``[--optional ...]``) are filled in.

Running a block: the commands of all runnable blocks of one file go, in
order, into one bash script (so a mount or a variable made in one block is
there in the next, as for a reader pasting them); ``/tmp/<name>`` paths are
moved into a scratch directory; each command's output is captured on its
own and compared with its claim.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import click

TMP_PATH = re.compile(r"/tmp/([A-Za-z0-9_.-]*[A-Za-z0-9_-])(?![A-Za-z0-9_.-])")


@dataclass
class Command:
    text: str                 # one logical command (continuation lines and quoted newlines kept)
    line: int                 # 1-based line in the document
    claim: list[str] = field(default_factory=list)   # the '#' lines after it, without '# '


@dataclass
class Block:
    doc: Path
    line: int                 # line of the opening fence
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.doc.name}:{self.line}"

    def commands(self) -> list[Command]:
        """Logical commands with the output each claims."""
        out: list[Command] = []
        pending: list[str] = []
        start = 0
        claimable = False
        for i, raw in enumerate(self.body.split("\n")):
            n = self.line + 1 + i
            if pending:
                pending.append(raw)
                if _complete("\n".join(pending)):
                    out.append(Command("\n".join(pending), start))
                    pending, claimable = [], True
                continue
            stripped = raw.strip()
            if not stripped:
                claimable = False
            elif stripped.startswith("#"):
                if claimable and out:
                    out[-1].claim.append(stripped[1:].removeprefix(" "))
            else:
                pending, start = [raw], n
                if _complete(raw):
                    out.append(Command(raw, n))
                    pending, claimable = [], True
        return out

    def claims(self) -> list[Command]:
        return [c for c in self.commands() if c.claim]


def _complete(text: str) -> bool:
    """Whether shell text ends outside quotes and without a continuation."""
    quote: str | None = None
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        elif quote is None and ch == "#":
            break  # a comment: the rest of this line does not count (only last lines matter here)
    return quote is None and not text.rstrip("\n").endswith("\\")


def blocks(doc: Path) -> list[Block]:
    """Fenced code blocks (with their language) and indented ones ('indent')."""
    text = doc.read_text()
    out = [Block(doc, text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
           for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]
    fenced = {(b.line, b.line + b.body.count("\n") + 1) for b in out}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        inside = any(a <= i + 1 <= b for a, b in fenced)
        if not inside and lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append(Block(doc, i, "indent", "\n".join(line[4:] for line in lines[i:j]) + "\n"))
            i = j
        else:
            i += 1
    return sorted(out, key=lambda b: b.line)


# -- output claims ------------------------------------------------------------------------

def matches(claim: list[str], output: str, rewrite: dict[str, str]) -> bool:
    """The output matches the claim: whitespace-insensitive, '...' any text,
    the claim's /tmp paths moved as the commands' were."""
    want = " ".join(" ".join(claim).split())
    for old, new in rewrite.items():
        want = want.replace(old, new)
    pattern = ".*?".join(re.escape(p) for p in want.split("..."))
    got = " ".join(output.split())
    return re.fullmatch(pattern, got, re.S) is not None


def tmp_rewrites(texts: list[str], scratch: Path) -> dict[str, str]:
    """/tmp/NAME -> scratch/NAME for every /tmp path the texts use."""
    names = sorted({m.group(1) for t in texts for m in TMP_PATH.finditer(t)}, key=len, reverse=True)
    return {f"/tmp/{n}": str(scratch / n) for n in names}


def rewrite(text: str, mapping: dict[str, str]) -> str:
    return TMP_PATH.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


@dataclass
class Result:
    command: Command
    block: Block
    output: str


def run_blocks(run: list[Block], scratch: Path, env: dict[str, str], cwd: Path,
               prelude: str = "", timeout: float = 300) -> list[Result]:
    """Run the blocks' commands in order in one bash script; each command's
    output captured apart. ``sudo`` is dropped (the tests run as root)."""
    cmds = [(b, c) for b in run for c in b.commands()]
    mapping = tmp_rewrites([prelude] + [c.text for _, c in cmds] + [" ".join(c.claim) for _, c in cmds], scratch)
    outdir = scratch / "outputs"
    outdir.mkdir(parents=True, exist_ok=True)
    for d in mapping.values():
        if not Path(d).suffix:
            Path(d).mkdir(parents=True, exist_ok=True)
    script = [rewrite(prelude, mapping)]
    for i, (_, c) in enumerate(cmds):
        text = re.sub(r"^(\s*)sudo ", r"\1", rewrite(c.text, mapping))
        script.append(f"{{\n{text}\n}} > {outdir}/{i} 2>&1")
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, timeout=timeout,
                   capture_output=True, text=True)
    return [Result(c, b, (outdir / str(i)).read_text() if (outdir / str(i)).exists() else "<not run>")
            for i, (b, c) in enumerate(cmds)]


# -- command-line syntax ----------------------------------------------------------------------

def fakemdev_lines(block: Block, placeholders: dict[str, str]) -> list[tuple[int, list[str]]]:
    """(line, argv after 'fakemdev') of every one-line fakemdev command in a
    block, placeholders (``UUID``, ``FILE``, ...) replaced by sample values."""
    out = []
    for c in block.commands():
        m = re.match(r"\s*(?:sudo\s+)?(?:\S*/)?fakemdev\s+(.*)", c.text)
        if m is None or "\n" in c.text:
            continue
        text = re.sub(r"\s#.*$", "", m.group(1))                      # a remark
        text = re.sub(r"\[[^\[\]]*(\[[^\]]*\])?[^\[\]]*\]", "", text)   # [--optional ARG], nested once
        text = re.split(r"\s[|>]\s|\s>|\s2>", text)[0]               # a pipe or a redirection
        argv = []
        for tok in shlex.split(text):
            head, colon, tail = tok.partition(":")
            if colon and tail in placeholders:                        # HOST:UUID
                tok = f"{head}:{placeholders[tail]}"
            argv.append(placeholders.get(tok, tok.split("|")[0]))     # A|B: either
        out.append((c.line, argv))
    return out


def parse_only(argv: list[str]) -> None:
    """Parse argv with the real CLI without running anything; raises click's
    UsageError (or BadParameter) where the command line would refuse it."""
    from fakemdev.cli import cli
    cmd: click.Command = cli
    name, args, parent = "fakemdev", list(argv), None
    while True:
        ctx = cmd.make_context(name, args, parent=parent)
        if not isinstance(cmd, click.Group):
            return
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        sub_name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None
        cmd, name, args, parent = sub, sub_name, rest, ctx
