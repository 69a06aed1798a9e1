"""Where frames come from before a reader turns them into ``Frame`` objects: dataset manifests and their selection
rules, the published splits, the body models and the safe unpickler their files need."""
