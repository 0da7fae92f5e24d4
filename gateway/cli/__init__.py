"""The command line: ``main`` (every subcommand), ``certs`` and ``demo``. Commands import
what they need lazily, so ``--version`` or ``status`` loads almost nothing.

May import anything of the gateway (the dev cloud only inside the commands that run it).
"""
