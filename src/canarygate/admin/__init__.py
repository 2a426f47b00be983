"""The release engineers' surface: the admin API (the CLI drives it)."""
