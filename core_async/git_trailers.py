"""The trailer index of the git component: ``Todo-Id`` -> commit, for one ``HEAD``, with git's semantics.

What the legacy component asks git for each todo (``git log -F --grep="Todo-Id: ID"
--format=%H..%(trailers:key=Todo-Id,valueonly) HEAD``, first record whose values hold
``ID``) is a function of the ``HEAD`` commit alone: history below a commit never
changes. :class:`TrailerIndex` computes that function for every id at once, for one
``HEAD``, and answers lookups from memory while ``HEAD`` stays put:

* **built** from one ``git log`` over the whole history (:func:`rebuild_args`,
  :meth:`TrailerIndex.install`): git itself parses the trailers, so the answers are
  git's, not a re-implementation's; only commits whose message mentions ``Todo-Id: ``
  are listed (``-F --grep``, which every answer needs anyway);
* **extended** by the component's own commits (:meth:`TrailerIndex.extend`): a new
  commit whose parent is the indexed ``HEAD`` becomes the newest in history, so its
  ids now point at it. Its message is read by :func:`message_todo_ids`, which
  recognises the plain shapes (a subject, a body, a last paragraph of ``Key: value``
  lines) exactly as git does and refuses anything else; a refused message, or a
  repository whose configuration changes git's trailer parsing (``trailer.*``,
  ``core.commentChar``), leaves the index stale, and the next lookup rebuilds it;
* **validated** on every lookup against the ``HEAD`` it was built for: a commit
  made outside the component, a reset, a rebase or a branch switch moves ``HEAD``
  elsewhere and the next lookup rebuilds (once).

Nothing here does I/O: the caller reads ``HEAD`` and runs git.

:func:`stripspace` is ``git stripspace`` (``git commit --cleanup=whitespace``, what
``git commit -F - --no-edit`` does to a message), so that an in-process commit stores
the very bytes the CLI would.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TRAILER_KEY = "Todo-Id"
#: What the legacy lookup greps for, followed by the id (``-F``: a fixed string).
GREP_PREFIX = f"{TRAILER_KEY}: "
_VALUE_SEP = "\x1f"

#: git's ``isspace`` (``sane_ctype``): space, tab, newline, carriage return; not ``\v``, ``\f``.
_GIT_SPACE = " \t\n\r"
#: A trailer line of the plain shape: ``Key: value`` (token of ASCII letters, digits and ``-``).
_PLAIN_TRAILER = re.compile(r"([A-Za-z0-9-]+): (\S.*)")
#: Any line git's ``find_separator`` would take for a trailer (token, optional blanks, ``:``).
_ANY_TRAILER = re.compile(r"[A-Za-z0-9-]+[ \t]*:")
#: Line starts that git's trailer parser treats specially (comments, dividers, generated trailers).
_SPECIAL_STARTS = ("#", "---", "(cherry picked from commit ", "Conflicts:")


def stripspace(message: str) -> str:
    """``git stripspace`` without comment stripping: what ``git commit -F - --no-edit`` stores.

    Trailing whitespace goes from every line, leading and trailing blank lines go,
    runs of blank lines become one, and the result ends with a newline (or is empty).
    """
    out: list[str] = []
    empties = 0
    for line in message.split("\n"):
        line = line.rstrip(_GIT_SPACE)
        if not line:
            empties += 1
            continue
        if empties and out:
            out.append("")
        empties = 0
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def rebuild_args(head: str) -> list[str]:
    """``git log`` arguments listing, for ``head``'s history, each candidate commit's trailer values and body.

    ``-z`` separates records with NUL and the format puts a NUL between a record's
    values and its body; neither a trailer value nor a message can hold a NUL.
    """
    return [
        "-c",
        "log.showSignature=false",
        "log",
        "-z",
        "-F",
        f"--grep={GREP_PREFIX}",
        f"--format=%H%n%(trailers:key={TRAILER_KEY},valueonly,separator=%x1f)%x00%B",
        "--end-of-options",
        head,
    ]


def _ids(values: Iterable[str], body: str) -> list[str]:
    """The ids a commit answers for: the legacy rule (value stripped, and the grep line present)."""
    out = []
    for value in values:
        todo_id = value.strip()
        if "\n" not in todo_id and GREP_PREFIX + todo_id in body:
            out.append(todo_id)
    return out


def parse_rebuild(output: str) -> dict[str, str]:
    """``todo id -> sha`` from :func:`rebuild_args`' output: the first (newest) commit of each id wins."""
    fields = output.split("\x00")
    if fields and fields[-1].strip() == "":
        fields.pop()
    if len(fields) % 2:
        raise ValueError("git log output is not in sha/values/body records")
    ids: dict[str, str] = {}
    for n in range(0, len(fields), 2):
        sha, _, values = fields[n].lstrip("\n").partition("\n")
        for todo_id in _ids(values.split(_VALUE_SEP), fields[n + 1]):
            ids.setdefault(todo_id, sha)
    return ids


def message_todo_ids(message: str) -> list[str] | None:
    """The ids git would index ``message`` (as stored) under, or ``None`` when it is not a plain shape.

    Plain means: already in :func:`stripspace` form; no line starting like a comment,
    a divider or a git-generated line; and a last paragraph (after the subject
    paragraph, which never holds trailers) that is either all ``Key: value`` lines
    or has no line git could read as a trailer. For those, git's trailer block is
    exactly that last paragraph or nothing. ``None`` tells the caller to let git decide.
    """
    if not message or stripspace(message) != message:
        return None
    lines = message[:-1].split("\n")
    if any(line.startswith(_SPECIAL_STARTS) for line in lines):
        return None
    values: list[str] = []
    if "" in lines:  # more than one paragraph: the last one may be a trailer block
        last = lines[len(lines) - lines[::-1].index("") :]
        plain = [_PLAIN_TRAILER.fullmatch(line) for line in last]
        if all(plain):
            values = [m[2] for m in plain if m is not None and m[1].lower() == TRAILER_KEY.lower()]
        elif any(_ANY_TRAILER.match(line) or line[:1] in (" ", "\t") for line in last):
            return None
    # git prints one empty value for a commit without the trailer (the legacy parse sees "").
    return _ids(values or [""], message)


class TrailerIndex:
    """``todo id -> sha`` of the newest commit carrying that trailer, in the history of :attr:`head`.

    Not thread-safe by itself: its owner serialises access.
    """

    __slots__ = ("builds", "extensions", "head", "ids")

    def __init__(self) -> None:
        #: The commit whose history the map describes; ``None``: nothing valid yet.
        self.head: str | None = None
        self.ids: dict[str, str] = {}
        #: How often the map was built from a history walk (tests and metrics read it).
        self.builds = 0
        #: How many of the component's own commits were added without a walk.
        self.extensions = 0

    def answer(self, head: str, todo_id: str) -> tuple[bool, str | None]:
        """``(True, sha or None)`` when the map describes ``head``; ``(False, None)`` when it must be built."""
        if self.head == head:
            return True, self.ids.get(todo_id)
        return False, None

    def install(self, head: str, ids: dict[str, str]) -> None:
        """Make ``ids`` (from :func:`parse_rebuild` over ``head``'s history) the map of ``head``."""
        self.head = head
        self.ids = ids
        self.builds += 1

    def invalidate(self) -> None:
        """Forget the map: the next lookup rebuilds it."""
        self.head = None
        self.ids = {}

    def extend(self, parents: list[str], sha: str, message: str | None) -> None:
        """Account for commit ``sha`` (with ``parents``, carrying ``message``), just made by the component.

        When its only parent is the indexed head (or it is a root commit), the new
        history is the old one plus this commit, the newest: its ids point at it.
        A message :func:`message_todo_ids` cannot read (or ``None``: the caller does
        not trust the plain parser for this repository) invalidates the map instead.
        Any other parentage leaves the map as it is: it no longer matches ``HEAD``.
        """
        if self.head == sha:
            return
        if parents and (len(parents) != 1 or parents[0] != self.head):
            return
        found = None if message is None else message_todo_ids(message)
        if found is None:
            self.invalidate()
            return
        if not parents:
            self.ids = {}
        for todo_id in found:
            self.ids[todo_id] = sha
        self.head = sha
        self.extensions += 1
