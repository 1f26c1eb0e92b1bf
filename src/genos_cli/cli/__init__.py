"""The `genos` command line: a thin map from subcommand to library function."""
