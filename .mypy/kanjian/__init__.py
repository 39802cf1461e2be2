"""Type-checking view of the kanjian import root (symlinks to the top-level folders)."""
