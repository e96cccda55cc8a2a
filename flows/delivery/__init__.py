"""Progressive delivery: judging a canary against production on live traffic, one small module per step.

``policy``      the canary's settings (share, alpha, margin, metric, guardrail limits, durations), embeddable
                in a model spec as ``canary:``;
``scores``      per-row scores of served predictions against labels (higher is better), the values averaged;
``sequential``  an always-valid confidence sequence on mean(canary) - mean(production), read at every look;
``guardrails``  label-free checks over the minutes both sides served: error rate and p99 latency;
``verdict``     promote / rollback / continue from the guardrails and the sequence, with a readable reason.

All of it is pure (no I/O, nothing at import); the flow that reads the log and acts is :mod:`flows.canary`.
"""
