#!/usr/bin/env python3
"""Calls grpc.health.v1.Health/Check on the gateway with grpcio and the stock
grpcio-health-checking stubs, and prints the outcome as one JSON line.

Output: {"ok": true, "service": ..., "status": "SERVING"}
     or {"ok": false, "service": ..., "code": "NOT_FOUND", "details": ...}
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
    p.add_argument("--service", default="", help="service to check ('' is the whole server)")
    p.add_argument("--server-name", default="localhost", help="name checked in the server certificate")
    p.add_argument("--timeout", type=float, default=20.0, help="call deadline in seconds")
    args = p.parse_args()
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

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
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as e:
            print(json.dumps({"ok": False, "service": args.service, "code": e.code().name, "details": e.details()}))
            return 0
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(json.dumps({"ok": True, "service": args.service, "status": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
