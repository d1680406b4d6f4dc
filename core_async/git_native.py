"""In-process git for the git component (libgit2 through pygit2), and when a repository keeps the CLI.

Every function here blocks (libgit2 is C, the file system is the file system): the
async component calls each operation through ONE thread hop, the generated sync
twin calls it inline. One :class:`NativeRepo` per workspace path and process
(:func:`native_repo`) holds the open libgit2 repository, a lock that serialises its
use (a ``git_repository`` is not to be shared by threads at once: the sync twin
runs on the bridge's threads, the async one on the default executor), and the
repository's :class:`~core_async.git_trailers.TrailerIndex`.

What the CLI does that libgit2 does not, and what happens then
--------------------------------------------------------------

An operation that cannot be done exactly as ``git add`` + ``git commit`` would do it
raises :class:`NativeUnavailable` *before anything is written*, and the component
runs the git CLI for it, as it always did. Each reason is logged once per repository.

Per repository (read when the repository is opened, again whenever one of its
configuration files, ``$HOME``'s, or its hooks change: ``_Session.watched``):

* **hooks** that ``git add``/``git commit`` run (``pre-commit``, ``prepare-commit-msg``,
  ``commit-msg``, ``post-commit``, ``post-index-change``, ``reference-transaction``), executable,
  in the hooks directory (``core.hooksPath`` honoured, relative to the work tree as git
  takes it), or hooks defined in the configuration (``hook.*``): libgit2 runs no hook;
* **``core.autocrlf``** ``true``/``input``: eol conversion of every file; a system-wide
  ``gitattributes`` file (the CLI reads it even with ``GIT_CONFIG_NOSYSTEM``);
* a commit **message cleanup** other than git's default for ``-F - --no-edit``
  (``commit.cleanup`` set to ``strip``/``verbatim``/...), a non-UTF-8 ``i18n.commitEncoding``;
* index formats libgit2 does not keep (``core.splitIndex``, ``index.sparse``,
  ``core.sparseCheckout``), a bare repository, or a repository libgit2 cannot open at
  all (``extensions.refStorage=reftable``, an object format it lacks, ownership).

Per commit:

* a path whose **attributes** ask for a conversion (``filter`` (LFS is one),
  ``text``, ``eol``, ``crlf``, ``ident``, ``working-tree-encoding``): libgit2 runs no
  external filter driver (libgit2 is asked only when an attributes file exists that
  could apply: ``.gitattributes`` on the path's way down, ``info/attributes``, the
  global one);
* a path git would read as a pathspec rather than a file name (glob characters,
  ``:`` magic, ``.``/``..``, a trailing or doubled ``/``), a directory, a path below a
  symlink or inside a nested repository, an ignored untracked file, a path that
  matches nothing (git's own error message is the one reported), a gitlink;
* a merge, rebase, cherry-pick or revert in progress, an index with conflicts, an
  ``index.lock`` held by another git;
* a message that is empty after cleanup, a subject (first paragraph) of several lines
  (git's reflog entry names its first line, libgit2's the whole paragraph), an identity
  git would refuse;
* any libgit2 error while the commit is prepared (nothing has been written then).

``commit.gpgsign`` is not a reason: the component's CLI commits run with
``-c commit.gpgsign=false`` (as legacy's do), so both paths make the same unsigned
commit. The system configuration is ignored on both paths (the CLI runs with
``GIT_CONFIG_NOSYSTEM=1``; libgit2's system search path is emptied here, which is
process-wide and what this process wants of libgit2 anyway).

If pygit2 cannot be imported, :func:`native_repo` returns ``None`` and says so in
one log line; everything runs through the CLI.

What stays identical to the CLI: the tree (the named paths' work-tree contents on
top of ``HEAD``'s tree, as ``git commit --only``; the whole index when no path is
named), the message bytes (``git stripspace``), author and committer (the agent's
name and email sanitised as git's ``ident.c`` does, the current time in the local
timezone, one timestamp for both), the parent, the branch (or detached ``HEAD``)
updated, the reflog entry (``commit: subject``) and the index left staged.

Known differences, none of which changes a commit: ``.git/COMMIT_EDITMSG`` is not
written; the index is read, then written under ``index.lock`` (git holds the lock
from its read on), so a ``git add`` by someone else landing in that millisecond
would be overwritten (the ref update itself is compare-and-swap: a commit made
meanwhile makes this one fail, never vanish); files pulled in by ``include.path``
are not watched (a change there is seen when a watched file changes or the process
restarts).
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from codeagent.errors import GitError
from core_async.git_trailers import TrailerIndex, parse_rebuild, stripspace

if TYPE_CHECKING:
    import pygit2
else:
    try:
        import pygit2
    except ImportError:  # the CLI does everything; native_repo() says so once
        pygit2 = None

log = logging.getLogger(__name__)

#: Hooks that ``git add`` / ``git commit`` may run (``pre-push`` and the like never run here).
COMMIT_HOOKS = (
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-index-change",
    "reference-transaction",
)
#: git's system-wide attributes file (Debian's and a /usr/local build's): the CLI reads it even with
#: ``GIT_CONFIG_NOSYSTEM``, libgit2 (system search path emptied) would not.
SYSTEM_ATTRIBUTES = ("/etc/gitattributes", "/usr/local/etc/gitattributes")
#: Attributes that make ``git add`` convert a file's content on its way into the repository.
CONVERTING_ATTRIBUTES = ("filter", "text", "eol", "crlf", "ident", "working-tree-encoding")
#: ``commit.cleanup`` values that mean "whitespace" for a message given with ``-F`` and no editor.
_WHITESPACE_CLEANUPS = ("default", "whitespace", "scissors")
_GITLINK = 0o160000
_PATHSPEC_MAGIC = ("*", "?", "[", "\\", "\x00")


class NativeUnavailable(Exception):
    """This operation goes through the git CLI; the message says why."""


def available() -> bool:
    """Whether pygit2 (and so libgit2) could be imported."""
    return pygit2 is not None


def git_ident(value: str) -> str:
    """``value`` as git's ``ident.c`` writes a name or email: crud trimmed from both ends, ``<>\\n`` dropped."""

    def crud(char: str) -> bool:
        return ord(char) <= 32 or char in ".,:;<>\"\\'"

    start, end = 0, len(value)
    while start < end and crud(value[start]):
        start += 1
    while end > start and crud(value[end - 1]):
        end -= 1
    return "".join(c for c in value[start:end] if c not in "\n<>")


_SETTINGS_LOCK = threading.Lock()
_settings_env: tuple[str, str] | None = None


def _search_path_env() -> tuple[str, str]:
    """Point libgit2's configuration search path where the git CLI looks (``$HOME``, XDG), no system file.

    libgit2 reads ``$HOME`` once; the CLI children read it at each start, so a
    change of ``$HOME`` is followed here (and reopens the repositories: see the fingerprint).
    """
    global _settings_env
    home = os.environ.get("HOME", "")
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    env = (home, xdg)
    with _SETTINGS_LOCK:
        if env != _settings_env:
            levels = pygit2.enums.ConfigLevel
            search = pygit2.settings.search_path
            search[levels.SYSTEM] = ""
            search[levels.PROGRAMDATA] = ""
            search[levels.GLOBAL] = home
            search[levels.XDG] = os.path.join(xdg, "git") if xdg else os.path.join(home, ".config", "git")
            _settings_env = env
    return env


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)


def _config_str(config: pygit2.Config, name: str) -> str | None:
    """A configuration value as a string; ``"true"`` for a key given without a value; ``None`` if unset."""
    if name not in config:
        return None
    value = config[name]
    return "true" if value is None else str(value)


def _config_true(config: pygit2.Config, name: str) -> bool:
    value = _config_str(config, name)
    return value is not None and value.strip().lower() in ("true", "yes", "on", "1")


@dataclass
class _Session:
    """An open repository and what was decided about it."""

    repo: pygit2.Repository
    workdir: str
    #: The workspace relative to the work tree, ``""`` or ending in ``/``.
    prefix: str
    #: Why commits of this repository go through the CLI; ``None``: they need not.
    cli_reason: str | None
    #: Whether git's trailer parsing is its default one here (see ``TrailerIndex.extend``).
    plain_trailers: bool
    #: Attribute files outside the work tree (``info/attributes``, the global one).
    attribute_files: tuple[str, ...]
    watched: tuple[str, ...]
    fingerprint: tuple[object, ...]


def _common_dir(gitdir: str) -> str:
    """The repository's common directory (a linked worktree's ``gitdir`` names it in ``commondir``)."""
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as f:
            return os.path.join(gitdir, f.read().strip())
    except OSError:
        return gitdir


class NativeRepo:
    """One workspace's repository, opened with libgit2, shared by every git component on that path."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.index = TrailerIndex()
        self._session: _Session | None = None
        self._logged: set[str] = set()

    # -- opening and deciding -------------------------------------------------------------

    def _fingerprint(self, watched: tuple[str, ...]) -> tuple[object, ...]:
        return (*_search_path_env(), *(_stamp(p) for p in watched))

    def _open(self) -> _Session:
        if not os.path.isdir(self.root):
            raise NativeUnavailable("the workspace is not a directory")
        home, xdg = _search_path_env()
        try:
            gitdir = pygit2.discover_repository(self.root)
            if gitdir is None:
                raise NativeUnavailable("not inside a git repository")
            repo = pygit2.Repository(gitdir)
        except (pygit2.GitError, OSError, ValueError) as exc:
            self._note("open", f"libgit2 cannot open the repository ({exc})")
            raise NativeUnavailable(f"libgit2 cannot open the repository: {exc}") from exc
        if repo.is_bare or not repo.workdir:
            raise NativeUnavailable("a bare repository")
        workdir = os.path.realpath(repo.workdir)
        real_root = os.path.realpath(self.root)
        rel = os.path.relpath(real_root, workdir)
        inside_git = os.path.relpath(real_root, os.path.realpath(repo.path))
        if rel == ".." or rel.startswith("../") or not inside_git.startswith(".."):
            raise NativeUnavailable("the workspace is not inside the work tree")
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        common = _common_dir(repo.path)
        config = repo.config.snapshot()
        configured = _config_str(config, "core.hooksPath")
        hooks_dir = (
            os.path.join(workdir, os.path.expanduser(configured))
            if configured
            else os.path.join(common, "hooks")
        )
        xdg_git = os.path.join(xdg, "git") if xdg else os.path.join(home, ".config", "git")
        attributes = _config_str(config, "core.attributesFile")
        attribute_files = (
            os.path.join(common, "info", "attributes"),
            os.path.expanduser(attributes) if attributes else os.path.join(xdg_git, "attributes"),
        )
        reason, plain = self._decide(config, hooks_dir)
        watched = (
            os.path.join(repo.path, "config"),
            os.path.join(repo.path, "config.worktree"),
            os.path.join(common, "config"),
            os.path.join(home, ".gitconfig"),
            os.path.join(xdg_git, "config"),
            *SYSTEM_ATTRIBUTES,
            hooks_dir,
            *(os.path.join(hooks_dir, name) for name in COMMIT_HOOKS),
        )
        return _Session(
            repo, workdir, prefix, reason, plain, attribute_files, watched, self._fingerprint(watched)
        )

    def _decide(self, config: pygit2.Config, hooks_dir: str) -> tuple[str | None, bool]:
        """``(why commits need the CLI, or None; whether trailers are parsed git's default way)``."""
        names = {entry.name.lower() for entry in config}
        plain = not any(n.startswith("trailer.") for n in names) and not (
            {"core.commentchar", "core.commentstring"} & names
        )
        reasons = []
        hooks = [
            name
            for name in COMMIT_HOOKS
            if os.path.isfile(os.path.join(hooks_dir, name))
            and os.access(os.path.join(hooks_dir, name), os.X_OK)
        ]
        if hooks:
            reasons.append(f"hooks {', '.join(hooks)} in {hooks_dir}")
        if any(n.startswith("hook.") for n in names):
            reasons.append("hooks configured (hook.*)")
        autocrlf = _config_str(config, "core.autocrlf")
        if autocrlf is not None and autocrlf.strip().lower() not in ("false", "no", "off", "0", ""):
            reasons.append(f"core.autocrlf={autocrlf}")
        cleanup = _config_str(config, "commit.cleanup")
        if cleanup is not None and cleanup.strip().lower() not in _WHITESPACE_CLEANUPS:
            reasons.append(f"commit.cleanup={cleanup}")
        encoding = _config_str(config, "i18n.commitEncoding")
        if encoding is not None and encoding.strip().lower() not in ("utf-8", "utf8"):
            reasons.append(f"i18n.commitEncoding={encoding}")
        for name in ("core.splitIndex", "index.sparse", "core.sparseCheckout"):
            if _config_true(config, name):
                reasons.append(f"{name}=true")
        system = [path for path in SYSTEM_ATTRIBUTES if os.path.exists(path)]
        if system:
            reasons.append(f"system-wide attributes ({', '.join(system)})")
        reason = "; ".join(reasons) or None
        if reason is not None:
            self._note(reason, reason)
        return reason, plain

    def _note(self, key: str, why: str) -> None:
        """Log ``why`` the first time ``key`` sends this repository's work to the CLI."""
        if key not in self._logged:
            self._logged.add(key)
            log.info("git %s: committing through the git CLI: %s", self.root, why)

    def _reader(self) -> _Session:
        """The open session, opening it if needed (no fingerprint check: reads only need ``HEAD``)."""
        if self._session is None:
            self._session = self._open()
        return self._session

    def _writer(self) -> _Session:
        """The open session, reopened and decided again if a watched file changed since."""
        session = self._session
        if session is None or self._fingerprint(session.watched) != session.fingerprint:
            self._session = None
            session = self._session = self._open()
        return session

    def _head(self, session: _Session) -> str | None:
        """``HEAD``'s target (no object read), ``None`` on an unborn branch."""
        repo = session.repo
        try:
            return str(repo.head.target)
        except pygit2.GitError:
            if repo.head_is_unborn:
                return None
            raise

    def _drop(self, exc: BaseException) -> NativeUnavailable:
        """Forget the session after a libgit2 failure (the repository may be gone); the CLI decides."""
        self._session = None
        return NativeUnavailable(f"libgit2: {exc}")

    # -- operations (each one thread hop in the async component) ----------------------------

    def probe(self) -> bool:
        """Whether the workspace is inside a work tree (``False``: let the CLI probe and initialise)."""
        with self.lock:
            try:
                self._reader()
            except NativeUnavailable:
                return False
            return True

    def head(self) -> str | None:
        """``HEAD^{commit}``, or ``None`` on an unborn branch."""
        with self.lock:
            session = self._reader()
            try:
                if session.repo.head_is_unborn:
                    return None
                return str(session.repo.head.peel(pygit2.Commit).id)
            except (pygit2.GitError, KeyError, ValueError) as exc:
                raise self._drop(exc) from exc

    def lookup(self, todo_id: str) -> tuple[bool, str | None]:
        """``(True, sha or None)`` from the trailer index, or ``(False, head)``: build it for ``head``."""
        with self.lock:
            session = self._reader()
            try:
                head = self._head(session)
            except (pygit2.GitError, KeyError, ValueError) as exc:
                raise self._drop(exc) from exc
            if head is None:
                return True, None
            known, sha = self.index.answer(head, todo_id)
            return (True, sha) if known else (False, head)

    def install(self, head: str, output: str, todo_id: str) -> str | None:
        """Build the index of ``head`` from ``git log`` ``output`` and answer ``todo_id`` from it.

        The map becomes the index only while ``HEAD`` is still ``head``; otherwise the
        answer (as of the lookup) is returned and the index is left to the next lookup.
        """
        try:
            ids = parse_rebuild(output)
        except ValueError as exc:
            raise GitError(["log"], 0, str(exc)) from exc
        with self.lock:
            try:
                current = self._head(self._reader())
            except (NativeUnavailable, pygit2.GitError, KeyError, ValueError):
                current = None
            if current == head:
                self.index.install(head, ids)
        return ids.get(todo_id)

    def note_commit(self, sha: str) -> None:
        """Account for commit ``sha`` made by the component through the CLI (the index follows it)."""
        with self.lock:
            try:
                session = self._reader()
                commit = session.repo[sha].peel(pygit2.Commit)
                parents = [str(p) for p in commit.parent_ids]
                message: str | None = commit.raw_message.decode("utf-8")
            except (NativeUnavailable, pygit2.GitError, KeyError, ValueError):
                self.index.invalidate()
                return
            self.index.extend(parents, sha, message if session.plain_trailers else None)

    def commit(self, message: str, paths: list[str], name: str, email: str) -> str:
        """Stage ``paths`` and commit them with ``message`` as ``git add -A`` + ``git commit --only`` would.

        Raises :class:`NativeUnavailable` (nothing written) when the CLI must do it,
        :class:`GitError` when writing the index or the commit fails.
        """
        with self.lock:
            session = self._writer()
            if session.cli_reason is not None:
                raise NativeUnavailable(session.cli_reason)
            repo = session.repo
            text = stripspace(message)
            author, address = git_ident(name), git_ident(email)
            if not text or "\x00" in message or not author or not address:
                self._note("message", "an empty message or identity (git reports it)")
                raise NativeUnavailable("empty message or identity")
            if text.partition("\n")[2][:1] not in ("", "\n"):
                # git's reflog names the first line, libgit2's the whole first paragraph.
                self._note("subject", "a subject of several lines")
                raise NativeUnavailable("a subject of several lines")
            try:
                if os.path.lexists(os.path.join(repo.path, "index.lock")):
                    raise NativeUnavailable("another git holds the index")  # git reports it its way
                if repo.state() != pygit2.enums.RepositoryState.NONE:
                    self._note("state", "a merge, rebase, cherry-pick or revert is in progress")
                    raise NativeUnavailable("an operation is in progress")
                index = repo.index
                index.read(False)
                if index.conflicts is not None:
                    self._note("conflicts", "the index has conflicts")
                    raise NativeUnavailable("the index has conflicts")
                staged = self._stage(session, index, paths)
                parents = self._parents(repo)
                tree = self._tree(repo, index, parents, staged) if paths else index.write_tree()
            except NativeUnavailable:
                self._reload_index(repo)
                raise
            except (pygit2.GitError, OSError, KeyError, ValueError) as exc:
                self._reload_index(repo)
                self._note("libgit2", f"libgit2 declined a commit ({exc})")
                raise NativeUnavailable(f"libgit2: {exc}") from exc
            signature = pygit2.Signature(author, address)
            try:
                if paths:
                    index.write()
                oid = repo.create_commit("HEAD", signature, signature, text, tree, parents)
            except (pygit2.GitError, OSError) as exc:  # a lock held by another git, a full disk...
                self._reload_index(repo)
                raise GitError(["commit"], 1, str(exc)) from exc
            sha = str(oid)
            self.index.extend([str(p) for p in parents], sha, text if session.plain_trailers else None)
            return sha

    # -- the commit's parts -------------------------------------------------------------------

    @staticmethod
    def _parents(repo: pygit2.Repository) -> list[pygit2.Oid]:
        """``[HEAD^{commit}]``, or ``[]`` on an unborn branch (one read of ``HEAD`` in the usual case)."""
        try:
            return [repo.head.peel(pygit2.Commit).id]
        except pygit2.GitError:
            if repo.head_is_unborn:
                return []
            raise

    @staticmethod
    def _reload_index(repo: pygit2.Repository) -> None:
        """Drop in-memory changes of the repository's index (it is cached by the repository object)."""
        try:
            repo.index.read(True)
        except pygit2.GitError:  # pragma: no cover - the next operation reads it again
            pass

    def _plain(self, session: _Session, path: str) -> str:
        """``path`` relative to the work tree, when git would take it as exactly that file."""
        if (
            not path
            or path in (".", "..")
            or path.startswith(("/", "../", ":"))
            or posixpath.normpath(path) != path
            or any(c in path for c in _PATHSPEC_MAGIC)
            or any(part.lower() == ".git" for part in path.split("/"))
        ):
            self._note("path", f"a path git reads as a pathspec ({path!r})")
            raise NativeUnavailable(f"{path!r} is not a plain path")
        rel = session.prefix + path
        parent = session.workdir
        for part in rel.split("/")[:-1]:
            parent = os.path.join(parent, part)
            try:
                st = os.lstat(parent)
            except FileNotFoundError:
                break  # a removed file's directory may be gone too
            if not stat.S_ISDIR(st.st_mode) or os.path.lexists(os.path.join(parent, ".git")):
                self._note("path", f"a path below a symlink or in a nested repository ({path!r})")
                raise NativeUnavailable(f"{path!r} is below a symlink or a nested repository")
        return rel

    def _stage(self, session: _Session, index: pygit2.Index, paths: list[str]) -> list[str]:
        """``git add -A -- paths`` on the in-memory index; the work-tree-relative paths."""
        repo = session.repo
        staged = []
        for path in paths:
            rel = self._plain(session, path)
            known = rel in index
            if known and index[rel].mode == _GITLINK:
                raise NativeUnavailable(f"{path!r} is a gitlink")
            try:
                st: os.stat_result | None = os.lstat(os.path.join(session.workdir, rel))
            except FileNotFoundError:
                st = None
            if st is None:
                if not known:
                    raise NativeUnavailable(f"{path!r} matches nothing")  # git words that error
                index.remove(rel)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                if not known and repo.path_is_ignored(rel):
                    raise NativeUnavailable(f"{path!r} is ignored")  # git refuses, and says so
                if self._attributes_may_apply(session, index, rel):
                    for name in CONVERTING_ATTRIBUTES:
                        value = repo.get_attr(rel, name)
                        if value is not None and value is not False:
                            self._note(f"attr:{name}", f"gitattributes {name}={value} (on {rel})")
                            raise NativeUnavailable(f"{rel}: {name}={value}")
                index.add(rel)
            else:
                self._note("path", f"a path that is not a file ({path!r})")
                raise NativeUnavailable(f"{path!r} is not a regular file or symlink")
            staged.append(rel)
        return staged

    @staticmethod
    def _attributes_may_apply(session: _Session, index: pygit2.Index, rel: str) -> bool:
        """Whether any attribute file could speak about ``rel`` (a few ``lstat`` calls; asking
        libgit2 for six attributes costs dozens of system calls, for nothing in most repositories).

        The places git reads for a check-in: ``.gitattributes`` in each directory from the
        top of the work tree down to ``rel``'s (in the work tree, else in the index),
        ``info/attributes`` and the global attributes file.
        """
        if any(os.path.lexists(path) for path in session.attribute_files):
            return True
        directory = ""
        for part in ["", *rel.split("/")[:-1]]:
            directory = f"{directory}{part}/" if part else directory
            name = f"{directory}.gitattributes"
            if name in index or os.path.lexists(os.path.join(session.workdir, name)):
                return True
        return False

    @staticmethod
    def _tree(
        repo: pygit2.Repository, index: pygit2.Index, parents: list[pygit2.Oid], staged: list[str]
    ) -> pygit2.Oid:
        """``git commit --only``'s tree: ``HEAD``'s tree with the staged paths as the index has them."""
        partial = pygit2.Index()
        if parents:
            partial.read_tree(repo[parents[0]].peel(pygit2.Tree))
        for rel in staged:
            if rel in index:
                partial.add(index[rel])
            elif rel in partial:
                partial.remove(rel)
        return partial.write_tree(repo)


_REGISTRY: weakref.WeakValueDictionary[str, NativeRepo] = weakref.WeakValueDictionary()
#: The last repositories asked for stay alive (and keep their index) when no component holds them.
_RECENT: deque[NativeRepo] = deque(maxlen=64)
_REGISTRY_LOCK = threading.Lock()
_unavailable_logged = False


def native_repo(root: Path) -> NativeRepo | None:
    """The shared :class:`NativeRepo` of ``root`` (keyed by its absolute path), or ``None`` without pygit2."""
    global _unavailable_logged
    if pygit2 is None:
        if not _unavailable_logged:
            _unavailable_logged = True
            log.warning("pygit2 cannot be imported: git runs through the git CLI (a process per step)")
        return None
    key = os.path.abspath(root)
    with _REGISTRY_LOCK:
        repo = _REGISTRY.get(key)
        if repo is None:
            repo = _REGISTRY[key] = NativeRepo(key)
        _RECENT.append(repo)
    return repo
