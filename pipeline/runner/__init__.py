"""Turning a source into stores: the driver (``driver``: a split's shards as dask tasks), the planning of a store, one
shard task, one frame through the stages, the writer lock, the failure report, and stores rendered by depth sensors."""
