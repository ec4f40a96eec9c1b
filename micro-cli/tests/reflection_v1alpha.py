"""Reads a node's schema over grpc.reflection.v1alpha with Python's grpcio-reflection client
(a third-party client that speaks only v1alpha), and prints what it found as JSON.

Usage: python3 reflection_v1alpha.py HOST:PORT
Exit 0 with {"services": [...], "methods": [...], "hello_input": "..."}; non-zero with the
error on stderr when the node does not serve v1alpha.
"""

import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    address = sys.argv[1]
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        greeter = pool.FindServiceByName("greeter.Greeter")
        print(
            json.dumps(
                {
                    "services": services,
                    "methods": sorted(m.name for m in greeter.methods),
                    "hello_input": greeter.methods_by_name["Hello"].input_type.full_name,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
