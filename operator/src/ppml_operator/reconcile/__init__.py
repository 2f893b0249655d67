"""Pure reconciliation: ledger operations, budget totals and the per-kind ``decide`` functions.

Nothing in this package talks to the API server, reads a clock or imports kopf: each function
takes what was observed and returns what to do (DESIGN §7, observe → decide → act).
"""
