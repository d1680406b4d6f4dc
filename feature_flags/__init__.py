"""The flag file: model, loader, watcher, writer, audit log. Knows nothing of what it steers."""
