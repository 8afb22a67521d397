"""One module per `dmmlkd` sub-command; each exposes `add_parser(subparsers)` and `run(args)`."""
