"""The benchmarks and the accuracy harness: modules run from the repository root as ``python -m bench.NAME``
(the Makefile's ``bench*`` targets); each writes ``bench/results/NAME.json`` with the machine and the commit."""
