"""The dataset manifests (YAML) shipped with the toolkit; ``hipnet.pipeline.manifest.manifest_path`` finds them."""
