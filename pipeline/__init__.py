"""The offline half of the toolkit: sources (``sources``) read by readers (``readers``) into frames (``core``), the
stages (``stages``), the runner that writes them as sharded Zarr stores (``runner``), and the store itself
(``store``); the embedded Anny dataset (``embedded``). docs/architecture.md has the layers."""
