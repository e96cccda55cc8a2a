"""esteira's core: what every part stands on, and nothing that stands on a part.

``settings`` (one pydantic-settings object), ``project`` (the user's folder esteira works over),
``profiles`` (whylogs behind one module), ``ray_runtime`` (one way to reach Ray), ``inference_log``
(the format the gateway writes and the monitor reads) and ``fileio`` (writing and reading data
locations). ``registry/``, ``feature_repo/``, ``flows/`` and ``gateway/`` import from here; this
package imports none of them (a test checks the direction of every import).
"""
