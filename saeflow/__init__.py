"""saeflow's application layer: the `saeflow` CLI, running flows from a terminal, serving them.

Sits above flows/ (it runs them); flows/ never imports it.
"""

from infra.quiet_env import apply_quiet_defaults

apply_quiet_defaults()
