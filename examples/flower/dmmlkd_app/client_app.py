"""The ClientApp: node ``partition-id`` k trains device k of the run in the run config."""

from dmmlkd.flower.app import config_from_run_config
from dmmlkd.flower.client import make_client_app

app = make_client_app(lambda context: config_from_run_config(dict(context.run_config)))
