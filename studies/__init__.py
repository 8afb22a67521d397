"""Studies: run configs, sweeps, tidy result tables, plots and the `dmmlkd` command line."""
