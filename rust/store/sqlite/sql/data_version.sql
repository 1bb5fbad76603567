-- Changes whenever another connection (any process) commits to the file: the cross-process
-- wake-up signal that replaces NOTIFY on SQLite.
PRAGMA data_version
