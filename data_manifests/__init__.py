"""The dataset manifests (YAML) shipped with the toolkit; ``hipnet.pipeline.sources.manifest.manifest_path`` finds them."""
