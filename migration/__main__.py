"""``python -m migration ...``: the ``migrate`` sub-app on its own (the CLI registers it as ``codeagent migrate``)."""

from migration.cli import migrate_app

if __name__ == "__main__":
    migrate_app(prog_name="codeagent migrate")
