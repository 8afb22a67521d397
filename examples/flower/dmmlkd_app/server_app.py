"""The ServerApp: AllocatorStrategy around FedAvg; the ledger and summary go to ``out``."""

import json

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from dmmlkd.flower.app import (
    CONTROL_POLICY,
    allocator_policy,
    config_from_run_config,
    outputs_summary,
    serve,
    write_outputs,
)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds; print the summary; write the outputs when ``out`` is set."""
    run_config = dict(context.run_config)
    config = config_from_run_config(run_config)
    name = str(run_config.get("policy", "allocator"))
    if name not in ("allocator", "uniform"):
        raise ValueError(f"policy must be allocator or uniform (got {name!r})")
    policy = allocator_policy(config) if name == "allocator" else CONTROL_POLICY
    fraction = float(run_config.get("fraction-train", 1.0))
    result = serve(grid, config, policy, fraction, backend="flwr run")
    print(json.dumps(outputs_summary({name: result}), indent=1))
    out = str(run_config.get("out", ""))
    if out:
        write_outputs({name: result}, config, {"policy": name, "fraction": fraction}, out)
