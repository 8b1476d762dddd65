"""The node's front ends: REST (``rest``) and the pipelined msgpack RPC (``rpc``), sharing one
operation table (``operations``)."""
