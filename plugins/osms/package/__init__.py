"""The daily package: consolidation, the build (gate, quality.json, manifest, signature),
the delivery chain and the delivery to the State Corporation."""
