"""A node's place in the cluster: registration, heartbeats and the map it enforces."""

from shardkv.node.membership.cluster_membership import ClusterMembership
from shardkv.node.membership.coordinator_link import CoordinatorLink, Placement

__all__ = ["ClusterMembership", "CoordinatorLink", "Placement"]
