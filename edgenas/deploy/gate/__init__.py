"""The latency gate: bench files compared with confidence intervals, a history of runs, the machine they ran on."""
