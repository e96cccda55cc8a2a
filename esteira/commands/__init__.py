"""The ``esteira`` command's sub-commands, one module per part they drive; :mod:`esteira.cli` mounts them."""
