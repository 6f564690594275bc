"""gaffer_lookupd's registry and the node-side client that registers with it."""
