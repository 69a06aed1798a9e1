"""The accuracy harness's parts: the variants and their budget (``variants``), the stores they train and are scored
on (``stores``), the fixed evaluation (``evaluation``), the training runs (``runs``), and the results file, tables
and pictures (``report``). ``python -m bench.accuracy`` runs it; its docstring says what it measures."""
