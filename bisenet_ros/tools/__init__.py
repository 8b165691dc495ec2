"""Command-line tools built on the core; each module is one ``bisenet-ros`` subcommand."""
