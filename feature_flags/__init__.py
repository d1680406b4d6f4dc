"""The flag file: model, loader, watcher, writer, audit log. Knows nothing of what it steers."""

from feature_flags.audit import AuditEntry, Change, append_entry, audit_path, read_entries
from feature_flags.loader import FlagFileError, LoadResult, parse_flags, read_flags
from feature_flags.model import COMPONENTS, ComponentFlag, FlagSet, Mode, RollbackPolicy, default_flags
from feature_flags.store import FlagStore
from feature_flags.watcher import FlagWatcher, watch_flags
from feature_flags.writer import ComponentChange, atomic_write_text, ensure_flag_file, update_flags

__all__ = [
    "COMPONENTS",
    "AuditEntry",
    "Change",
    "ComponentChange",
    "ComponentFlag",
    "FlagFileError",
    "FlagSet",
    "FlagStore",
    "FlagWatcher",
    "LoadResult",
    "Mode",
    "RollbackPolicy",
    "append_entry",
    "atomic_write_text",
    "audit_path",
    "default_flags",
    "ensure_flag_file",
    "parse_flags",
    "read_entries",
    "read_flags",
    "update_flags",
    "watch_flags",
]
