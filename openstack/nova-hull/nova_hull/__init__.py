"""A Nova compute driver for one hull node, through the node's API."""
