"""One module per ``cinepregen`` subcommand, each exposing ``add_parser(subparsers)``."""
