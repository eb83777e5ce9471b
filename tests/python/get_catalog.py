#!/usr/bin/env python3
"""Calls sharing.v1.AgentService/GetCatalog on the gateway with grpcio (a gRPC implementation
that is not ours) and prints the outcome as one JSON line.

Needs the stubs generated from proto/sharing/v1/agent.proto by grpc_tools.protoc on
PYTHONPATH (or in --stubs).

Output: {"ok": true, "agency": ..., "datasets": [...], "catalog_sha256": ...}
     or {"ok": false, "code": "UNAUTHENTICATED", "details": ...}
"""

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--addr", required=True, help="HOST:PORT of the gateway")
    p.add_argument("--ca", required=True, help="CA certificate (PEM file)")
    p.add_argument("--cert", help="client certificate (PEM file)")
    p.add_argument("--key", help="client private key (PEM file)")
    p.add_argument("--stubs", help="directory holding the generated sharing/v1 stubs")
    p.add_argument("--server-name", default="localhost", help="name checked in the server certificate")
    p.add_argument("--timeout", type=float, default=20.0, help="call deadline in seconds")
    args = p.parse_args()
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    if args.stubs:
        sys.path.insert(0, args.stubs)

    import grpc
    from sharing.v1 import agent_pb2, agent_pb2_grpc

    with open(args.ca, "rb") as f:
        ca = f.read()
    cert = key = None
    if args.cert:
        with open(args.cert, "rb") as f:
            cert = f.read()
        with open(args.key, "rb") as f:
            key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    options = [("grpc.ssl_target_name_override", args.server_name)]
    with grpc.secure_channel(args.addr, creds, options=options) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        try:
            catalog = stub.GetCatalog(agent_pb2.GetCatalogRequest(), timeout=args.timeout)
        except grpc.RpcError as e:
            print(json.dumps({"ok": False, "code": e.code().name, "details": e.details()}))
            return 0
    print(
        json.dumps(
            {
                "ok": True,
                "agency": catalog.agency,
                "datasets": [d.name for d in catalog.datasets],
                "catalog_sha256": catalog.catalog_sha256,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
